import CPtrace
import Glibc

/// Readable names for mangled symbols: C++ (Itanium ABI: `_Z...`) and Rust (legacy
/// `_ZN...17h<hash>E`, shown without the hash, and v0 `_R...`), through libiberty (see
/// demangle_shim.c for why that demangler). A name that is not mangled (every C function) is
/// told by its first two bytes and never reaches the demangler, so a C library costs nothing.
public enum Demangle {
    /// With the parameter list, as reports show it: `Server::handle(int)`,
    /// `std::ostream& std::endl<char, ...>(std::ostream&)`; nil for a name that is not mangled.
    public static func full(_ name: String) -> String? {
        looksMangled(name) ? demangle(name, parameters: true) : nil
    }

    /// Without the parameter list (and a template's return type), as patterns match it:
    /// `Server::handle`, `std::endl<char, ...>`; nil for a name that is not mangled.
    public static func base(_ name: String) -> String? {
        looksMangled(name) ? demangle(name, parameters: false) : nil
    }

    /// `_Z` (C++, legacy Rust) or `_R` (Rust v0).
    static func looksMangled(_ name: String) -> Bool {
        var u = name.utf8.makeIterator()
        guard u.next() == UInt8(ascii: "_") else { return false }
        let second = u.next()
        return second == UInt8(ascii: "Z") || second == UInt8(ascii: "R")
    }

    private static func demangle(_ name: String, parameters: Bool) -> String? {
        guard let p = hk_demangle(name, parameters ? 1 : 0) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }
}
