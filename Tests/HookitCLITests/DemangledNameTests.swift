import Foundation
import Glibc
import TestSupport
import XCTest

/// C++ functions named the way their source names them: cxxtarget's `shop::` functions (a
/// method, a namespace function, an overloaded pair) hooked by demangled names, with counts that
/// must equal the calls the target counted itself.
final class DemangledNameTests: XCTestCase {
    private let pair = ["shop::area(long)", "shop::area(long, long)"]

    /// `symbols` shows demangled names (NAME is the rest of the line: it has spaces), `--mangled`
    /// raw ones; a pattern matches either, and its parameter list (or the mangled name) picks one
    /// overload of two.
    func testSymbolsShowDemangledNamesAndMangledShowsRawOnes() throws {
        let target = try TargetProcess("cxxtarget")
        func names(_ args: String...) -> [String] {
            let r = runProgram([Repo.hookit, "symbols", "\(target.pid)"] + args)
            XCTAssertEqual(r.status, 0, r.stderr)
            return r.output.split(separator: "\n").map { String($0.split(separator: " ", maxSplits: 3)[3]) }
        }
        XCTAssertEqual(names("cxxtarget:shop::*"), ["shop::Server::handle(long)", "shop::parse(char const*)"] + pair)
        XCTAssertEqual(names("cxxtarget:shop::*", "--mangled"),
                       ["_ZN4shop6Server6handleEl", "_ZN4shop5parseEPKc", "_ZN4shop4areaEl", "_ZN4shop4areaEll"])
        XCTAssertEqual(names("cxxtarget:shop::area"), pair, "without a parameter list, both overloads")
        XCTAssertEqual(names("cxxtarget:shop::area(long)"), [pair[0]], "the parameter list picks one")
        XCTAssertEqual(names("cxxtarget:_ZN4shop4areaEll"), [pair[1]], "so does the mangled name")
        XCTAssertEqual(names("cxxtarget:*::handle"), ["shop::Server::handle(long)"])

        let json = runProgram([Repo.hookit, "symbols", "--json", "\(target.pid)", "cxxtarget:shop::parse"])
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any], json.stderr)
        XCTAssertEqual(obj["name"] as? String, "shop::parse(char const*)")
        XCTAssertEqual(obj["mangled"] as? String, "_ZN4shop5parseEPKc")

        // A big C++ library, by the issue's own pattern.
        let strings = names("libstdc++.so.6:std::__cxx11::basic_string*")
        XCTAssertGreaterThan(strings.count, 100)
        // A template member's shown name starts with its return type (`void std::__cxx11::...`).
        XCTAssertTrue(strings.allSatisfy { $0.hasPrefix("std::__cxx11::basic_string") || $0.hasPrefix("void std::__cxx11::basic_string") },
                      "\(strings.filter { !$0.hasPrefix("std::__cxx11::basic_string") }.prefix(5))")
        let raw = names("libstdc++.so.6:std::__cxx11::basic_string*", "--mangled")
        XCTAssertEqual(raw.count, strings.count, "--mangled changes what is shown, not what matches")
        XCTAssertTrue(raw.allSatisfy { $0.hasPrefix("_ZN") || $0.hasPrefix("_ZNK") }, "\(raw.prefix(5))")
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    /// A class method, a namespace function and an overloaded pair, counted by demangled names:
    /// each count equals the target's own. The pair's pattern counts both overloads; a trace of one
    /// of them by its parameter list sees only its calls, under its demangled name (also in the
    /// Chrome trace). The same function asked for by its mangled and its demangled name is
    /// hooked once.
    func testCxxMethodNamespaceFunctionAndOverloadsCountedByDemangledNames() throws {
        let target = try TargetProcess("cxxtarget")
        let file = "/tmp/hookit-cxx-\(getpid()).json"
        defer { unlink(file) }
        let h = Background(["attach", "\(target.pid)", "--json", "--output", file,
                            "--count", "cxxtarget:shop::Server::handle", "--count", "cxxtarget:shop::parse",
                            "--count", "cxxtarget:_ZN4shop5parseEPKc", "--count", "cxxtarget:shop::area",
                            "--trace", "cxxtarget:shop::area(long, long)"])
        try attached(h, target)
        XCTAssertEqual(try target.send("handle 7"), "721")          // Σ 100 + i, i < 7
        XCTAssertEqual(try target.send("parse 5"), "35")
        XCTAssertEqual(try target.send("area 3 4"), "17")           // 0+1+4 + 0+2+4+6
        XCTAssertEqual(try target.send("area 2 0"), "1")
        let own = try target.send("cxxcalls")
        XCTAssertEqual(own, "handle=7 parse=5 area1=5 area2=4")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        let all = events(out)

        let attached = try XCTUnwrap(all.first { $0["event"] as? String == "attached" })
        XCTAssertEqual(attached["functions"] as? Int, 4, "parse is one function, whichever name asked for it")
        let patterns = try XCTUnwrap(attached["patterns"] as? [[String: Any]])
        XCTAssertEqual(patterns.map { $0["hooked"] as? Int }, [1, 1, 1, 2, 1], "\(patterns)")

        var calls: [String: Int] = [:]
        for s in all where s["event"] as? String == "stats" {
            let f = try XCTUnwrap(s["function"] as? String)
            XCTAssertNil(calls[f], "one row per function: \(f)")
            calls[f] = s["calls"] as? Int
        }
        let ownCounts = Dictionary(uniqueKeysWithValues: own.split(separator: " ").map { kv in
            let p = kv.split(separator: "=")
            return (String(p[0]), Int(p[1])!)
        })
        XCTAssertEqual(calls, ["cxxtarget:shop::Server::handle(long)": ownCounts["handle"]!,
                               "cxxtarget:shop::parse(char const*)": ownCounts["parse"]!,
                               "cxxtarget:shop::area(long)": ownCounts["area1"]!,
                               "cxxtarget:shop::area(long, long)": ownCounts["area2"]!])

        let traced = all.filter { $0["event"] as? String == "call" }
        XCTAssertEqual(traced.count, ownCounts["area2"])
        XCTAssertTrue(traced.allSatisfy { $0["function"] as? String == "cxxtarget:shop::area(long, long)" }, "\(traced.first ?? [:])")
        XCTAssertEqual(traced.compactMap { ($0["args"] as? [Int])?.prefix(2) }.map(Array.init), [[0, 2], [1, 2], [2, 2], [3, 2]])
        let chrome = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any]
        let slices = try XCTUnwrap(chrome?["traceEvents"] as? [[String: Any]]).filter { $0["ph"] as? String == "X" }
        XCTAssertEqual(slices.map { $0["name"] as? String }, Array(repeating: "cxxtarget:shop::area(long, long)", count: 4))

        for f in ["_ZN4shop6Server6handleEl", "_ZN4shop5parseEPKc", "_ZN4shop4areaEl", "_ZN4shop4areaEll"] {
            XCTAssertTrue(try codeEqualsFile(target, f, in: "cxxtarget"), "\(f) restored")
        }
    }

    /// `--mangled` reports the raw names; demangled patterns still match.
    func testMangledReportsRawNames() throws {
        let target = try TargetProcess("cxxtarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--mangled", "--count", "cxxtarget:shop::Server::handle"])
        try attached(h, target)
        XCTAssertEqual(try target.send("handle 3"), "303")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        let stats = events(out).filter { $0["event"] as? String == "stats" }
        XCTAssertEqual(stats.map { $0["function"] as? String }, ["cxxtarget:_ZN4shop6Server6handleEl"])
        XCTAssertEqual(stats.first?["calls"] as? Int, 3)
    }
}
