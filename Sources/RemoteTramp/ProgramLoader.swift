import Glibc
import Injector

/// Program libraries and hookit's runtime (libhookit_rt.so) in the tracee: each loaded once
/// (a remote dlopen), its symbols found once (a remote dlsym), and never unloaded while the
/// table lives — an image may call into them until it is freed. A library the loader preloaded
/// (`hookit run`, see Tracee.preloaded) is not loaded again: its symbols are read from its file,
/// which is all there is before the program's libc has started.
final class ProgramLoader {
    /// What the runtime is loaded without, by dlopen or preload: the Swift build links every
    /// library against libswiftCore.so, whose constructors would run in the tracee; the runtime
    /// is plain C and needs none of it.
    static let runtimeWithoutNeeded = ["libswiftCore.so"]

    let tracee: Tracee
    let runtimeLibrary: String?
    let timePrograms: Bool
    /// CPUs with per-CPU cells: the runtime must agree with the images.
    let cpus: Int
    private enum Loaded { case opened(handle: UInt64), preloaded(Module) }
    private var libraries: [String: Loaded] = [:]
    /// hookit_rt_run in the tracee, once the runtime is loaded.
    private(set) var runtimeRun: UInt64?
    private var runtimeSymbols: [String: UInt64] = [:]
    /// The runtime's hookit_rt_loader_quiet while the loader is followed: raised around hookit's
    /// own library loads, whose notifications hookit, busy with the call, could not answer.
    var loaderQuiet: UInt64?

    init(tracee: Tracee, runtimeLibrary: String?, timePrograms: Bool, cpus: Int) {
        self.tracee = tracee
        self.runtimeLibrary = runtimeLibrary
        self.timePrograms = timePrograms
        self.cpus = cpus
    }

    func isLoaded(_ library: String) -> Bool { libraries[library] != nil }

    /// The address of `name` in a loaded library (the tracee's dlsym, or the preloaded file's
    /// dynamic symbols); nil when it has none.
    func symbol(_ name: String, in library: String, symbols: SymbolTable) throws -> UInt64? {
        switch libraries[library] {
        case .opened(let handle): return try tracee.dlsym(handle: handle, name: name, symbols: symbols)
        case .preloaded(let module): return symbols.definedSymbol(name, in: module)
        case nil: return nil
        }
    }

    /// What runs for a link of `spec`: the built-in count, or the address of a loaded symbol. A
    /// user program other than a replacement needs the runtime (hookit_rt_run) too.
    func resolve(_ spec: ProgramSpec, kind: ProgramKind, symbols: SymbolTable) throws -> ProgramCode {
        switch spec {
        case .count:
            return .count
        case .user(let library, let symbol):
            if kind != .replace { try loadRuntime(symbols: symbols) }
            try load(library, symbols: symbols)
            guard let address = try self.symbol(symbol, in: library, symbols: symbols) else {
                throw TrampolineError.programNotFound(library: library, symbol: symbol)
            }
            return .user(library: library, symbol: symbol, address: address)
        case .runtime(let symbol):
            guard kind != .replace else {
                throw TrampolineError.unsupported(kind: kind.rawValue, program: symbol, reason: "hookit's own programs run as fentry, fexit or fmod_ret")
            }
            return .runtime(symbol: symbol, address: try runtimeSymbol(symbol, symbols: symbols))
        }
    }

    private func load(_ library: String, symbols: SymbolTable) throws {
        if libraries[library] != nil { return }
        if let bias = tracee.preloaded[library],
           let module = symbols.modules.first(where: { $0.bias == bias && $0.elfType == 3 }) {   // ET_DYN
            libraries[library] = .preloaded(module)
            return
        }
        if tracee.beforeStart && !symbols.modules.contains(where: { $0.name.hasPrefix("ld-linux") || $0.name.hasPrefix("ld.so") }) {
            throw TrampolineError.staticProgram(library: library)
        }
        if let q = loaderQuiet { try tracee.memory.write([1, 0, 0, 0], at: q) }
        defer { if let q = loaderQuiet { try? tracee.memory.write([0, 0, 0, 0], at: q) } }
        let lib = try tracee.inject(library: library, symbols: symbols,
                                    withoutNeeded: library == runtimeLibrary ? Self.runtimeWithoutNeeded : [])
        libraries[library] = .opened(handle: lib.handle)
    }

    /// The address of a symbol of the runtime (loading it if needed): its programs, and the
    /// variables through which hookit configures them.
    func runtimeSymbol(_ name: String, symbols: SymbolTable) throws -> UInt64 {
        if let a = runtimeSymbols[name] { return a }
        try loadRuntime(symbols: symbols)
        guard let path = runtimeLibrary, let address = try symbol(name, in: path, symbols: symbols) else {
            throw TrampolineError.programNotFound(library: runtimeLibrary ?? "libhookit_rt.so", symbol: name)
        }
        runtimeSymbols[name] = address
        return address
    }

    private func loadRuntime(symbols: SymbolTable) throws {
        if runtimeRun != nil { return }
        guard let path = runtimeLibrary, access(path, R_OK) == 0 else {
            throw TrampolineError.runtimeMissing(path: runtimeLibrary ?? "(not configured)")
        }
        try load(path, symbols: symbols)
        runtimeRun = try symbol("hookit_rt_run", in: path, symbols: symbols)
        if runtimeRun == nil { throw TrampolineError.programNotFound(library: path, symbol: "hookit_rt_run") }
        // Written either way: the runtime stays loaded after a session, with the last one's value.
        if let flag = try symbol("hookit_rt_time_enabled", in: path, symbols: symbols) {
            try tracee.memory.write([timePrograms ? 1 : 0, 0, 0, 0], at: flag)
        }
        if let cpus = try symbol("hookit_rt_cpus", in: path, symbols: symbols) {
            try tracee.memory.write(Array([UInt8].le(UInt64(self.cpus)).prefix(4)), at: cpus)
        }
    }

    /// Refuses a program library that does not define `symbol`, before it is loaded. The file is
    /// read as the tracee sees it, or as hookit does when the tracee cannot see that path at all
    /// (another mount namespace; Tracee.inject copies hookit's file in through a memfd then).
    static func checkLibraryExports(_ library: String, _ symbol: String, pid: pid_t) throws {
        var st = stat()
        let seen = "/proc/\(pid)/root\(library)"
        let path = stat(seen, &st) != 0 && errno == ENOENT && access(library, R_OK) == 0 ? library : seen
        guard let names = ElfFile.definedSymbols(path: path) else {
            throw TrampolineError.programNotFound(library: library, symbol: symbol + " (the library cannot be read)")
        }
        if !names.contains(symbol) { throw TrampolineError.programNotFound(library: library, symbol: symbol) }
    }
}

extension TrampolineTable {
    /// How `hookit run` has the loader preload the runtime: without the libswiftCore.so
    /// dependency the Swift build adds to every library it links (the runtime is plain C; the
    /// Swift runtime's constructors would run in the program).
    public static func runtimePreload(_ path: String) -> PreloadLibrary {
        PreloadLibrary(path: path, withoutNeeded: ProgramLoader.runtimeWithoutNeeded)
    }
}
