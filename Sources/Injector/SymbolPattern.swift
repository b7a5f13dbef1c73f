import Glibc

/// `[MODULE:]GLOB`, the way every subcommand names functions: `target:add`, `libc.so.6:str*`,
/// `add*` (any module). Both parts are shell globs (fnmatch). A module part without glob
/// characters also matches a versioned file name by prefix: `libc` matches `libc.so.6`. A C++
/// or Rust function matches by its mangled name and by its demangled one (see `matches`):
/// `app:Server::handle*`.
public struct SymbolPattern: Sendable, Equatable {
    public let text: String
    public let module: String?
    public let function: String

    public init(_ text: String) throws {
        self.text = text
        // Split at the first single ':' (a C++ "::" in a name is not a module separator).
        var modulePart: String?
        var functionPart = text
        var i = text.startIndex
        while i < text.endIndex {
            if text[i] == ":" {
                let next = text.index(after: i)
                if next < text.endIndex && text[next] == ":" { i = text.index(after: next); continue }
                modulePart = String(text[..<i])
                functionPart = String(text[next...])
                break
            }
            i = text.index(after: i)
        }
        if functionPart.isEmpty || modulePart == "" {
            throw InjectorError.noSymbol(pattern: text + " (expected [MODULE:]FUNCTION)")
        }
        self.module = modulePart
        self.function = functionPart
    }

    public func matchesModule(_ name: String) -> Bool {
        guard let m = module else { return true }
        if fnmatch(m, name, 0) == 0 { return true }
        if m.contains(where: { "*?[".contains($0) }) { return false }
        return name.hasPrefix(m + ".") || name.hasPrefix(m + "-")
    }

    public func matchesFunction(_ name: String) -> Bool {
        fnmatch(function, name, 0) == 0
    }

    /// A function matches by its raw name, or by its demangled name without the parameter list
    /// (`Server::handle*`), or, for a pattern that has one, with it: `Shape::area(int)` picks
    /// one overload of two.
    public func matches(_ f: FunctionSymbol) -> Bool {
        if matchesFunction(f.name) { return true }
        let readable = function.contains("(") ? f.demangled ?? Demangle.full(f.name) : Demangle.base(f.name)
        return readable.map(matchesFunction) ?? false
    }
}
