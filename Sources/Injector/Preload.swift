import CPtrace
import Glibc

/// A library the dynamic loader loads with the program's own libraries, before any of their
/// code runs (LD_PRELOAD): how `hookit run` gets its runtime and the user's program libraries
/// into a program whose libc has not started, where dlopen cannot be called.
public struct PreloadLibrary: Sendable, Equatable {
    /// The file, as hookit names it (and reports it).
    public var path: String
    /// DT_NEEDED entries left out of the copy the program loads: a dependency only the build
    /// added (libhookit_rt.so's libswiftCore.so, whose constructors would run in the program).
    public var withoutNeeded: [String]

    public init(path: String, withoutNeeded: [String] = []) {
        self.path = path
        self.withoutNeeded = withoutNeeded
    }
}

/// The child's LD_PRELOAD entries and the descriptors it inherits for them.
///
/// A library the loader cannot take by its path (LD_PRELOAD splits at spaces and colons) or that
/// needs editing goes in through a memfd, named /proc/self/fd/N in LD_PRELOAD. N is a high
/// number: the loader knows the object by that name for the program's whole life, and a program
/// that later dlopens its own /proc/self/fd/N would be handed hookit's library instead.
/// hookit closes those descriptors in the program once the loader has mapped them.
struct PreloadSet {
    struct Entry {
        var library: PreloadLibrary
        /// The name in LD_PRELOAD, which is also the loader's name for the object (l_name).
        var name: String
        /// The descriptor the child inherits (hookit's copy is closed after the fork).
        var fd: Int32?
    }
    var entries: [Entry] = []
    /// The program's own LD_PRELOAD, kept after hookit's entries.
    var programValue: String?

    static let variable = "LD_PRELOAD="

    /// Nothing to preload.
    init() {}

    init(_ libraries: [PreloadLibrary], environment: [String]) throws {
        programValue = environment.last { $0.hasPrefix(Self.variable) }.map { String($0.dropFirst(Self.variable.count)) }
        do {
            for l in libraries {
                try Tracee.checkFile(l.path, as: l.path, display: "as seen by hookit")
                if l.withoutNeeded.isEmpty && l.path.hasPrefix("/") && !l.path.contains(where: { $0 == " " || $0 == ":" }) {
                    entries.append(Entry(library: l, name: l.path, fd: nil))
                } else {
                    let fd = try Self.copy(l)
                    entries.append(Entry(library: l, name: "/proc/self/fd/\(fd)", fd: fd))
                }
            }
        } catch {
            closeInHookit()
            throw error
        }
    }

    /// What LD_PRELOAD holds in the child: hookit's entries, then the program's own.
    var value: String { (entries.map(\.name) + [programValue].compactMap { $0 }.filter { !$0.isEmpty }).joined(separator: " ") }

    /// `environment` with LD_PRELOAD replaced by `value` (once, where the last one was).
    func environment(_ environment: [String]) -> [String] {
        var out = environment.filter { !$0.hasPrefix(Self.variable) }
        out.append(Self.variable + value)
        return out
    }

    func closeInHookit() {
        for e in entries { if let fd = e.fd { Glibc.close(fd) } }
    }

    /// A memfd holding the library (edited as asked), at a descriptor no lower than a high mark
    /// and without FD_CLOEXEC, so the child inherits it through exec.
    private static func copy(_ l: PreloadLibrary) throws -> Int32 {
        let memfd: Int32
        do { memfd = try LibraryCopy.memfd(of: l.path, withoutNeeded: l.withoutNeeded) }
        catch let e as LibraryCopy.Failure { throw InjectorError.preloadFailed(path: l.path, detail: e.detail) }
        defer { Glibc.close(memfd) }
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        let mark = Int32(clamping: max(16, min(Int(limit.rlim_cur), 4096) - 64))
        let inherited = fcntl(memfd, F_DUPFD, mark)
        guard inherited >= 0 else { throw InjectorError.preloadFailed(path: l.path, detail: "fcntl(F_DUPFD): \(errnoText(errno))") }
        return inherited
    }
}

extension Tracee {
    /// The objects the dynamic loader has loaded, in its order: r_debug.r_map's list of
    /// `struct link_map { l_addr; l_name; l_ld; l_next; l_prev }` (<link.h>, the ABI debuggers
    /// read). l_addr is the load bias.
    func loadedObjects(rDebug: UInt64) throws -> [(name: String, bias: UInt64)] {
        var out: [(String, UInt64)] = []
        var map = try memory.readU64(at: rDebug + 8)
        while map != 0 && out.count < 100_000 {
            let bias = try memory.readU64(at: map)
            let namePointer = try memory.readU64(at: map + 8)
            out.append((namePointer == 0 ? "" : (try memory.readCString(at: namePointer)), bias))
            map = try memory.readU64(at: map + 24)
        }
        return out
    }

    /// After the loader mapped the preloaded libraries: records where each landed, closes the
    /// descriptors the child inherited for them and takes hookit's entries out of the
    /// environment the program will see (`envp`, the initial stack's environment array).
    /// Libraries the loader refused (it says so on stderr and goes on) are simply not recorded.
    /// `rDebug` nil: a static program, held at its entry point, which has not read its
    /// auxiliary vector yet.
    func settlePreloads(_ set: PreloadSet, rDebug: UInt64?, envp: UInt64) throws {
        if let rDebug {
            let objects = try loadedObjects(rDebug: rDebug)
            for e in set.entries {
                if let o = objects.first(where: { $0.name == e.name }) { preloaded[e.library.path] = o.bias }
            }
        }
        for e in set.entries { if let fd = e.fd { try close(fd: fd) } }
        try restoreEnvironment(set, envp: envp, movingAuxv: rDebug == nil)
        if !preloaded.isEmpty { try checkNoInterposition() }
    }

    /// Refuses a preloaded library that defines a dynamic symbol a library of the program
    /// defines too: preloaded objects come before the program's libraries in symbol lookup, so
    /// it would replace theirs for every caller (a dlopen'ed library comes after them, and
    /// would not). Names every shared object gets from the linker do not count.
    private func checkNoInterposition() throws {
        let symbols = try SymbolTable(pid: pid, memory: memory)
        let exe = symbols.executable?.path
        let ours = Set(preloaded.values)
        let linkerDefined: Set<String> = ["_init", "_fini", "_edata", "_end", "__bss_start"]
        func exported(_ m: Module) -> Set<String> {
            Set(symbols.elfTables(m).symbols.filter { $0.dynamic && $0.shndx != 0 && $0.bind != 0 }.map { $0.name.strippingSymbolVersion })
                .subtracting(linkerDefined)
        }
        let others = symbols.modules.filter { $0.path != exe && !$0.isVDSO && !ours.contains($0.bias) }
        for (path, bias) in preloaded.sorted(by: { $0.key < $1.key }) {
            guard let m = symbols.modules.first(where: { $0.bias == bias && $0.elfType == 3 }) else { continue }
            let names = exported(m)
            for other in others {
                if let clash = names.intersection(exported(other)).sorted().first {
                    throw InjectorError.preloadInterposes(path: path, symbol: clash, module: other.name)
                }
            }
        }
    }

    /// The environment array as the program would have had it without hookit: LD_PRELOAD back to
    /// the program's own value (rewritten in place: it is shorter), or its entry removed by
    /// moving the later ones down. The auxiliary vector after the array moves down with them
    /// when nothing has read it yet (`movingAuxv`: a static program's libc finds it past the
    /// environment's NULL); otherwise it stays where the loader found it and the array ends with
    /// two NULLs. The strings' memory keeps hookit's text, so /proc/PID/environ, which shows
    /// that memory, still names the preloads.
    private func restoreEnvironment(_ set: PreloadSet, envp: UInt64, movingAuxv: Bool) throws {
        var pointers: [UInt64] = []
        while pointers.count < 1 << 20 {
            let p = try memory.readU64(at: envp + UInt64(pointers.count) * 8)
            if p == 0 { break }
            pointers.append(p)
        }
        let ours = PreloadSet.variable + set.value
        guard let i = try pointers.lastIndex(where: { try memory.read(at: $0, count: ours.utf8.count + 1) == Array(ours.utf8) + [0] }) else { return }
        if let own = set.programValue {
            try memory.write(Array((PreloadSet.variable + own).utf8) + [0], at: pointers[i])
        } else {
            var later = pointers[(i + 1)...].flatMap { [UInt8].le($0) } + [UInt8].le(UInt64(0))
            if movingAuxv {
                var entry = envp + UInt64(pointers.count + 1) * 8
                while later.count < 1 << 16 {
                    let type = try memory.readU64(at: entry), value = try memory.readU64(at: entry + 8)
                    later += [UInt8].le(type) + [UInt8].le(value)
                    if type == 0 { break }                                  // AT_NULL
                    entry += 16
                }
            }
            try memory.write(later, at: envp + UInt64(i) * 8)
        }
    }
}
