import Foundation
import Glibc
import TestSupport
import XCTest

/// docs/events.md is the schema of `--json`: every line of a full session (trace, count with
/// histograms, override, a user program, interactive add/list/remove and a bad command,
/// detach; `hookit run` to the program's exit; a fatal error) must match its tables.
final class EventSchemaTests: XCTestCase {
    func testEveryJSONLineOfAFullSessionMatchesDocsEventsMd() throws {
        let schema = try EventSchema(markdown: String(contentsOfFile: Repo.root + "/docs/events.md", encoding: .utf8))
        let target = try TargetProcess("hooktarget")
        let hookit = try TargetProcess(path: Repo.hookit, arguments: [
            "attach", "\(target.pid)", "--interactive", "--json", "--interval", "0.2",
            "--trace", "hooktarget:greet", "--sig", "greet(str) -> long", "--trace", "hooktarget:add", "--stack",
            "--count", "hooktarget:fib", "--hist", "--override", "hooktarget:fallible=-1", "--errno", "EIO",
            "--prog", "fentry:hooktarget:rip_first=count",
        ])
        var lines: [String] = []
        /// Lines until one is the event `name` (interval stats and calls come in between).
        func until(_ name: String) throws -> [String: Any] {
            while true {
                let l = try hookit.readLine(timeout: 20)
                lines.append(l)
                if let e = try? JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any], e["event"] as? String == name { return e }
            }
        }
        let attached = try until("attached")
        XCTAssertEqual(attached["schema"] as? Int, 1)
        XCTAssertEqual(attached["pid"] as? Int, Int(target.pid))
        XCTAssertEqual(try target.send("greet alice"), "5")
        XCTAssertEqual(try target.send("add 2 3"), "5")
        XCTAssertEqual(try target.send("fib 5"), "5")
        XCTAssertEqual(try target.send("fallible 3"), "-1 5 1")
        XCTAssertEqual(try target.send("ripfirst 1"), "1001")
        try hookit.write("add --count hooktarget:add4*")       // add4 is refused, add4_next hooked
        let added = try until("added")
        XCTAssertEqual(added["refused"] as? Int, 1)
        // Quoted as in a shell: the expression has spaces.
        try hookit.write("add --count hooktarget:sum8 --if 'arg0 > 0 && arg7 < 1' --by arg0")
        XCTAssertEqual(try until("error")["fatal"] as? Bool, false, "arg7 is no value: a parse error, and the session goes on")
        try hookit.write("add --count hooktarget:sum8 --if 'arg0 > 0 && arg1 < 9' --by arg0 --hist arg1")
        _ = try until("added")
        XCTAssertEqual(try target.send("sum8"), "204")
        try hookit.write("list")
        _ = try until("list")
        try hookit.write("add --trace hooktarget:no_such_fn")
        XCTAssertEqual(try until("error")["fatal"] as? Bool, false)
        try hookit.write("remove \(try XCTUnwrap(added["id"] as? Int))")
        _ = try until("removed")
        usleep(300_000)                                          // an interval table after the changes
        try hookit.write("detach")
        _ = try until("detached")
        XCTAssertEqual(hookit.waitExit(timeout: 20), 0)

        let run = runProgram([Repo.hookit, "run", "--json", "--trace", "hooktarget:add", "--", Repo.target("hooktarget")], stdin: "add 1 2\nquit\n")
        XCTAssertEqual(run.status, 0, run.stderr)
        let fatal = runProgram([Repo.hookit, "attach", "\(target.pid)", "--json", "--count", "hooktarget:no_such_fn"])
        XCTAssertEqual(fatal.status, 1)
        XCTAssertTrue(fatal.stderr.contains("hookit: error: no function matches 'hooktarget:no_such_fn'"), "errors are text on stderr too: \(fatal.stderr)")
        lines += run.output.split(separator: "\n").map(String.init).filter { $0.hasPrefix("{") }
        lines += fatal.output.split(separator: "\n").map(String.init)

        var seen: [String: Int] = [:]
        for l in lines {
            let problems = schema.check(line: l)
            XCTAssertEqual(problems, [], l)
            if let e = try? JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any], let name = e["event"] as? String {
                seen[name, default: 0] += 1
            }
        }
        for name in ["attached", "refused", "call", "stats", "keys", "override", "added", "list", "removed", "error", "detached", "exited"] {
            XCTAssertNotNil(seen[name], "the session shows a \(name) event: \(seen)")
        }

        // The values are the target's: what it called, what the override did to it.
        let all = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let greet = try XCTUnwrap(all.first { $0["event"] as? String == "call" && $0["function"] as? String == "hooktarget:greet" })
        XCTAssertEqual(greet["args"] as? [String], ["alice"])
        XCTAssertEqual(greet["ret"] as? Int, 5)
        let fib = try XCTUnwrap(all.last { $0["event"] as? String == "stats" && $0["function"] as? String == "hooktarget:fib" })
        XCTAssertEqual(fib["final"] as? Bool, true)
        XCTAssertEqual(fib["calls"] as? Int, 15, "fib(5) makes 15 calls")
        let hist = try XCTUnwrap(fib["hist"] as? [[Int]])
        XCTAssertEqual(hist.map { $0[2] }.reduce(0, +), 15, "the histogram holds every call")
        let keys = try XCTUnwrap(all.last { $0["event"] as? String == "keys" })
        XCTAssertEqual(keys["keys"] as? [[String: Int]], [["key": 1, "count": 1]], "sum8(1, 2, ...) counted under its arg0")
        let sum8 = try XCTUnwrap(all.last { $0["event"] as? String == "stats" && $0["function"] as? String == "hooktarget:sum8" })
        XCTAssertEqual(sum8["hist_of"] as? String, "arg1")
        XCTAssertEqual(sum8["hist"] as? [[Int]], [[2, 4, 1]], "arg1 = 2 in [2, 4)")
        let override = try XCTUnwrap(all.first { $0["event"] as? String == "override" })
        XCTAssertEqual(override["injected"] as? Int, 1)
        XCTAssertEqual(override["errno"] as? Int, 5)
        let prog = try XCTUnwrap(all.first { $0["event"] as? String == "stats" && $0["kind"] as? String == "fentry" })
        XCTAssertEqual(prog["calls"] as? Int, 1)
        XCTAssertEqual(all.last { $0["event"] as? String == "exited" }?["status"] as? Int, 0)
    }

    /// The checker itself rejects what the document does not allow.
    func testSchemaCheckerRejectsUnknownEventsFieldsAndTypes() throws {
        let schema = try EventSchema(markdown: String(contentsOfFile: Repo.root + "/docs/events.md", encoding: .utf8))
        XCTAssertEqual(schema.check(line: #"{"event":"removed","id":1,"calls":2,"ns":3,"misses":0}"#), [])
        XCTAssertNotEqual(schema.check(line: #"{"event":"nonesuch"}"#), [])
        XCTAssertNotEqual(schema.check(line: #"{"event":"removed","id":1,"calls":2,"ns":3}"#), [], "a required field missing")
        XCTAssertNotEqual(schema.check(line: #"{"event":"removed","id":1,"calls":-2,"ns":3,"misses":0}"#), [], "uint")
        XCTAssertNotEqual(schema.check(line: #"{"event":"removed","id":1,"calls":2,"ns":3,"misses":0,"x":1}"#), [], "an undocumented field")
        XCTAssertNotEqual(schema.check(line: #"{"event":"error","message":"m","fatal":1}"#), [], "bool")
        XCTAssertEqual(schema.check(line: #"{"event":"call","function":"f","tid":1,"ts":2,"args":["s",1,null,true],"ret":null,"ns":null,"ended":"unwound"}"#), [])
        XCTAssertNotEqual(schema.check(line: #"{"event":"list","hooks":[{"id":1}]}"#), [], "objects inside are checked too")
    }
}

/// The tables of docs/events.md: per section (`### name`), its fields' types and whether each
/// is required.
struct EventSchema {
    struct Field { let type: String, required: Bool }
    private(set) var sections: [String: [String: Field]] = [:]
    /// Sections under "## Events" are events; the rest are objects used inside them.
    private(set) var events: Set<String> = []

    init(markdown: String) throws {
        var section: String?, inEvents = false
        for raw in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("## ") { inEvents = line == "## Events"; section = nil; continue }
            if line.hasPrefix("### ") {
                section = String(line.dropFirst(4))
                if inEvents { events.insert(section!) }
                sections[section!] = [:]
                continue
            }
            guard let s = section, line.hasPrefix("| `") else { continue }
            // Cells split at pipes that are not escaped (`uint\|null`).
            let cells = line.replacingOccurrences(of: "\\|", with: "\u{1}").split(separator: "|")
                .map { $0.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "\u{1}", with: "|") }
            guard cells.count >= 3 else { throw TestError("docs/events.md: bad row \(line)") }
            sections[s]![cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`"))] = Field(type: cells[1], required: cells[2] == "yes")
        }
        if events.isEmpty { throw TestError("docs/events.md has no events") }
    }

    /// What is wrong with one line; empty when it matches.
    func check(line: String) -> [String] {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return ["not a JSON object"] }
        guard let name = obj["event"] as? String else { return ["no event name"] }
        guard events.contains(name) else { return ["event \(name) is not in docs/events.md"] }
        var rest = obj
        rest["event"] = nil
        return check(object: rest, section: name, path: name)
    }

    private func check(object: [String: Any], section: String, path: String) -> [String] {
        guard let fields = sections[section] else { return ["\(path): no section \(section)"] }
        var problems: [String] = []
        for (key, field) in fields where field.required && object[key] == nil { problems.append("\(path): \(key) missing") }
        for (key, value) in object.sorted(by: { $0.key < $1.key }) {
            guard let field = fields[key] else { problems.append("\(path): \(key) is not documented"); continue }
            problems += check(value, field.type, path: "\(path).\(key)")
        }
        return problems
    }

    private func check(_ value: Any, _ type: String, path: String) -> [String] {
        let alternatives = type.split(separator: "|").map(String.init)
        if alternatives.count > 1 {
            let each = alternatives.map { check(value, $0, path: path) }
            return each.contains { $0.isEmpty } ? [] : each.flatMap { $0 }
        }
        let isBool = String(describing: Swift.type(of: value)) == "__NSCFBoolean"
        let number = isBool ? nil : value as? NSNumber
        let isInteger = number.map { !["d", "f"].contains(String(cString: $0.objCType)) } ?? false
        let ok: Bool
        switch type {
        case "null": ok = value is NSNull
        case "bool": ok = isBool
        case "int": ok = isInteger
        case "uint": ok = isInteger && (String(cString: number!.objCType) == "Q" || number!.int64Value >= 0)
        case "number": ok = number != nil
        case "string": ok = value is String
        case "value": ok = value is NSNull || isBool || number != nil || value is String
        default:
            if type.hasPrefix("array<") && type.hasSuffix(">") {
                guard let items = value as? [Any] else { return ["\(path): not an array"] }
                let inner = String(type.dropFirst(6).dropLast())
                return items.enumerated().flatMap { check($0.element, inner, path: "\(path)[\($0.offset)]") }
            }
            guard let obj = value as? [String: Any] else { return ["\(path): not an object (\(type))"] }
            return check(object: obj, section: type, path: path)
        }
        return ok ? [] : ["\(path): \(value) is not \(type)"]
    }
}
