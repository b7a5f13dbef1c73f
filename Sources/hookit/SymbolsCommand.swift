import ArgumentParser
import Glibc
import Injector

struct SymbolsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "symbols",
        abstract: "List the functions of a running process that hookit can hook.",
        discussion: """
        Prints one function per line: 0xADDRESS SIZE MODULE NAME. Patterns are [MODULE:]GLOB, \
        e.g. 'target:add', 'libc.so.6:str*', 'add*'. C++ and Rust names are shown demangled \
        (--mangled: raw) and patterns match either: 'app:Server::handle*', or with the parameter \
        list for one overload, 'app:Shape::area(int)'. NAME may contain spaces. IFUNCs (strlen, memcpy, ...) show the \
        implementation the process actually runs. The process is not stopped or attached to.
        """
    )

    @Argument(help: "The process to inspect.")
    var pid: Int32

    @Argument(help: "Patterns [MODULE:]GLOB; all functions when none is given.")
    var patterns: [String] = []

    @Flag(help: "One JSON object per line: {\"address\",\"size\",\"module\",\"name\"} (and \"mangled\", the raw name, when it differs).")
    var json = false

    @Flag(help: "Raw (mangled) names instead of demangled C++ and Rust names.")
    var mangled = false

    func run() throws {
        do {
            try Preflight.check(pid: pid, forAttach: false)
            let table = try SymbolTable(pid: pid, mangledNames: mangled)
            let functions: [FunctionSymbol]
            let parsed = try patterns.map(SymbolPattern.init)
            if parsed.isEmpty {
                functions = table.modules.flatMap { table.functions(in: $0) }.map(table.named)
            } else {
                functions = try table.resolve(parsed)
            }
            // IFUNCs the process has not resolved yet cannot be listed at their implementation.
            let unresolved = table.unresolvedIFuncs.filter { full in
                let parts = full.split(separator: ":", maxSplits: 1).map(String.init)
                return parsed.isEmpty || parsed.contains { $0.matchesModule(parts[0]) && $0.matchesFunction(parts[1]) }
            }
            var out = ""
            for f in functions {
                out += json ? jsonLine(f) : textLine(f)
                out += "\n"
                if out.utf8.count > 1 << 16 { print(out, terminator: ""); out = "" }
            }
            print(out, terminator: "")
            if !unresolved.isEmpty {
                var stderr = StandardError()
                let some = unresolved.prefix(5).joined(separator: ", ")
                print("hookit: note: left out \(unresolved.count) IFUNC(s) the process has not resolved yet: \(some)\(unresolved.count > 5 ? ", ..." : "")",
                      to: &stderr)
            }
        } catch {
            throw Output(json: json).fatal(error)
        }
    }

    func textLine(_ f: FunctionSymbol) -> String {
        "0x\(String(f.address, radix: 16)) \(f.size) \(f.module) \(f.displayName)"
    }

    func jsonLine(_ f: FunctionSymbol) -> String {
        var s = "{\"address\":\"0x\(String(f.address, radix: 16))\",\"size\":\(f.size),"
        s += "\"module\":\(JSON.string(f.module)),\"name\":\(JSON.string(f.displayName))"
        if f.displayName != f.name { s += ",\"mangled\":\(JSON.string(f.name))" }
        if let r = f.ifuncResolver { s += ",\"ifunc_resolver\":\"0x\(String(r, radix: 16))\"" }
        return s + "}"
    }
}

enum JSON {
    static func string(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16) }
                else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}
