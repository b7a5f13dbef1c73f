import RemoteTramp
import Injector

/// A C prototype for a traced function: how its arguments and return value print.
///
///     --sig 'open(str, int, oct) -> int'
///
/// Types: int, uint, long, ulong (size_t, ssize_t aliases), hex/ptr, str, char, bool, oct, void
/// (return only). Arguments beyond the signature, and functions without one, print in hex.
struct Signature: Equatable {
    enum ValueType: String, CaseIterable {
        case int, uint, long, ulong, hex, str, char, bool, oct, void
    }

    var name: String
    var args: [ValueType]
    var ret: ValueType

    static let aliases: [String: ValueType] = [
        "int": .int, "i32": .int, "fd": .int, "pid_t": .int,
        "uint": .uint, "unsigned": .uint, "u32": .uint, "mode_t": .oct, "oct": .oct,
        "long": .long, "i64": .long, "ssize_t": .long, "off_t": .long,
        "ulong": .ulong, "u64": .ulong, "size_t": .ulong,
        "hex": .hex, "ptr": .hex, "pointer": .hex, "void*": .hex, "void *": .hex,
        "str": .str, "string": .str, "char*": .str, "char *": .str, "const char*": .str, "const char *": .str,
        "char": .char, "bool": .bool, "void": .void,
    ]

    /// Parses `name(type, ...) [-> type]`.
    init(parsing text: String) throws {
        let t = text.trimmingCharacters(in: " ")
        guard let open = t.firstIndex(of: "("), let close = t.lastIndex(of: ")"), open < close else {
            throw SignatureError(text: text, reason: "expected NAME(TYPE, ...) -> TYPE")
        }
        name = String(t[..<open]).trimmingCharacters(in: " ")
        guard !name.isEmpty else { throw SignatureError(text: text, reason: "the function name is missing") }
        let inner = t[t.index(after: open)..<close].trimmingCharacters(in: " ")
        args = try (inner.isEmpty || inner == "void" ? [] : inner.split(separator: ",").map { try Self.type(String($0), in: text) })
        guard args.count <= 6, !args.contains(.void) else {
            throw SignatureError(text: text, reason: args.count > 6 ? "at most 6 arguments are traced (the register arguments)" : "void is only a return type")
        }
        let rest = t[t.index(after: close)...].trimmingCharacters(in: " ")
        if rest.isEmpty { ret = .hex }
        else if rest.hasPrefix("->") { ret = try Self.type(String(rest.dropFirst(2)), in: text) }
        else { throw SignatureError(text: text, reason: "expected '-> TYPE' after the arguments, found '\(rest)'") }
    }

    init(name: String, args: [ValueType], ret: ValueType) {
        self.name = name; self.args = args; self.ret = ret
    }

    private static func type(_ word: String, in text: String) throws -> ValueType {
        let w = word.trimmingCharacters(in: " ")
        guard let t = aliases[w] else {
            throw SignatureError(text: text, reason: "unknown type '\(w)' (known: int, uint, long, ulong, size_t, hex, ptr, str, char, bool, oct, void)")
        }
        return t
    }

    /// The values --trace copies as strings (the first two of them).
    var strings: TraceProgram.Strings {
        TraceProgram.Strings(arguments: args.indices.filter { args[$0] == .str }, returnValue: ret == .str)
    }

    /// Common libc functions, so `--trace 'libc.so.6:open*'` prints paths without a --sig.
    static let builtin: [String: Signature] = {
        let table: [(String, [ValueType], ValueType)] = [
            ("open", [.str, .hex, .oct], .int), ("open64", [.str, .hex, .oct], .int),
            ("openat", [.int, .str, .hex, .oct], .int), ("openat64", [.int, .str, .hex, .oct], .int),
            ("creat", [.str, .oct], .int), ("close", [.int], .int),
            ("read", [.int, .hex, .ulong], .long), ("write", [.int, .hex, .ulong], .long),
            ("pread64", [.int, .hex, .ulong, .long], .long), ("pwrite64", [.int, .hex, .ulong, .long], .long),
            ("lseek", [.int, .long, .int], .long), ("fsync", [.int], .int),
            ("malloc", [.ulong], .hex), ("free", [.hex], .void), ("calloc", [.ulong, .ulong], .hex),
            ("realloc", [.hex, .ulong], .hex), ("posix_memalign", [.hex, .ulong, .ulong], .int),
            ("aligned_alloc", [.ulong, .ulong], .hex),
            ("strlen", [.str], .ulong), ("strcmp", [.str, .str], .int), ("strncmp", [.str, .str, .ulong], .int),
            ("strcpy", [.hex, .str], .hex), ("strdup", [.str], .hex), ("strchr", [.str, .char], .hex),
            ("strstr", [.str, .str], .hex), ("atoi", [.str], .int), ("strtol", [.str, .hex, .int], .long),
            ("getenv", [.str], .str), ("setenv", [.str, .str, .int], .int), ("puts", [.str], .int),
            ("fopen", [.str, .str], .hex), ("fopen64", [.str, .str], .hex), ("fclose", [.hex], .int),
            ("unlink", [.str], .int), ("unlinkat", [.int, .str, .hex], .int), ("rename", [.str, .str], .int),
            ("mkdir", [.str, .oct], .int), ("rmdir", [.str], .int), ("chdir", [.str], .int),
            ("access", [.str, .int], .int), ("faccessat", [.int, .str, .int, .hex], .int),
            ("stat", [.str, .hex], .int), ("lstat", [.str, .hex], .int), ("stat64", [.str, .hex], .int),
            ("statx", [.int, .str, .hex, .uint, .hex], .int), ("fstat", [.int, .hex], .int),
            ("execve", [.str, .hex, .hex], .int), ("execvp", [.str, .hex], .int), ("system", [.str], .int),
            ("dlopen", [.str, .hex], .hex), ("dlsym", [.hex, .str], .hex),
            ("socket", [.int, .int, .int], .int), ("connect", [.int, .hex, .uint], .int),
            ("bind", [.int, .hex, .uint], .int), ("listen", [.int, .int], .int),
            ("accept", [.int, .hex, .hex], .int), ("accept4", [.int, .hex, .hex, .hex], .int),
            ("send", [.int, .hex, .ulong, .hex], .long), ("recv", [.int, .hex, .ulong, .hex], .long),
            ("sendto", [.int, .hex, .ulong, .hex, .hex, .uint], .long), ("recvfrom", [.int, .hex, .ulong, .hex, .hex, .hex], .long),
            ("sendmsg", [.int, .hex, .hex], .long), ("recvmsg", [.int, .hex, .hex], .long),
            ("pipe", [.hex], .int), ("pipe2", [.hex, .hex], .int), ("dup", [.int], .int), ("dup2", [.int, .int], .int),
            ("fork", [], .int), ("getpid", [], .int), ("gettid", [], .int), ("kill", [.int, .int], .int),
            ("usleep", [.uint], .int), ("sleep", [.uint], .uint), ("nanosleep", [.hex, .hex], .int),
            ("epoll_wait", [.int, .hex, .int, .int], .int), ("poll", [.hex, .ulong, .int], .int),
            ("pthread_mutex_lock", [.hex], .int), ("pthread_mutex_unlock", [.hex], .int),
            ("pthread_create", [.hex, .hex, .hex, .hex], .int),
        ]
        var d: [String: Signature] = [:]
        for (n, a, r) in table { d[n] = Signature(name: n, args: a, ret: r) }
        return d
    }()

    /// The signature for a function: a --sig naming it, else the built-in one, else nil.
    static func lookup(_ function: String, given: [Signature]) -> Signature? {
        given.first { $0.name == function } ?? builtin[function]
    }

    /// A function's signature by its raw name, or by its demangled name without parameters
    /// (`--sig 'Server::handle(ptr, long) -> long'`; `this` is the first argument of a method).
    static func lookup(_ f: FunctionSymbol, given: [Signature]) -> Signature? {
        lookup(f.name, given: given) ?? Demangle.base(f.name).flatMap { base in given.first { $0.name == base } }
    }
}

struct SignatureError: Error, CustomStringConvertible {
    let text: String
    let reason: String
    var description: String { "--sig '\(text)': \(reason)" }
}

/// A traced value as printed: text for people, JSON for scripts.
enum TracedValue {
    case signed(Int64), unsigned(UInt64), hex(UInt64), octal(UInt64), string(String), char(UInt8), bool(Bool), null, none

    static func of(_ raw: UInt64, _ type: Signature.ValueType, string: String?) -> TracedValue {
        switch type {
        case .int: return .signed(Int64(Int32(truncatingIfNeeded: raw)))
        case .uint: return .unsigned(UInt64(UInt32(truncatingIfNeeded: raw)))
        case .long: return .signed(Int64(bitPattern: raw))
        case .ulong: return .unsigned(raw)
        case .hex: return .hex(raw)
        case .oct: return .octal(raw & 0xFFFF_FFFF)
        case .str: return string.map { .string($0) } ?? (raw == 0 ? .null : .hex(raw))
        case .char: return .char(UInt8(truncatingIfNeeded: raw))
        case .bool: return .bool(raw & 0xFF != 0)
        case .void: return .none
        }
    }

    var text: String {
        switch self {
        case .signed(let v): return "\(v)"
        case .unsigned(let v): return "\(v)"
        case .hex(let v): return "0x" + String(v, radix: 16)
        case .octal(let v): return "0" + String(v, radix: 8)
        case .string(let s): return JSON.string(s)
        case .char(let c): return c >= 32 && c < 127 ? "'\(Character(UnicodeScalar(c)))'" : "\(c)"
        case .bool(let b): return b ? "true" : "false"
        case .null: return "NULL"
        case .none: return "void"
        }
    }

    var json: String {
        switch self {
        case .signed(let v): return "\(v)"
        case .unsigned(let v), .hex(let v), .octal(let v): return "\(v)"
        case .string(let s): return JSON.string(s)
        case .char(let c): return "\(c)"
        case .bool(let b): return b ? "true" : "false"
        case .null, .none: return "null"
        }
    }
}
