import Glibc
import Injector

/// Program libraries and hookit's runtime (libhookit_rt.so) in the tracee: each loaded once
/// (a remote dlopen), its symbols found once (a remote dlsym), and never unloaded while the
/// table lives — an image may call into them until it is freed.
final class ProgramLoader {
    let tracee: Tracee
    let runtimeLibrary: String?
    let timePrograms: Bool
    /// CPUs with per-CPU cells: the runtime must agree with the images.
    let cpus: Int
    private var libraries: [String: UInt64] = [:]       // path -> dlopen handle
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

    func handle(of library: String) -> UInt64? { libraries[library] }

    /// What runs for a link of `spec`: the built-in count, or the address of a loaded symbol. A
    /// user program other than a replacement needs the runtime (hookit_rt_run) too.
    func resolve(_ spec: ProgramSpec, kind: ProgramKind, symbols: SymbolTable) throws -> ProgramCode {
        switch spec {
        case .count:
            return .count
        case .user(let library, let symbol):
            if kind != .replace { try loadRuntime(symbols: symbols) }
            let handle = try load(library, symbols: symbols)
            guard let address = try tracee.dlsym(handle: handle, name: symbol, symbols: symbols) else {
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

    private func load(_ library: String, symbols: SymbolTable) throws -> UInt64 {
        if let h = libraries[library] { return h }
        if let q = loaderQuiet { try tracee.memory.write([1, 0, 0, 0], at: q) }
        defer { if let q = loaderQuiet { try? tracee.memory.write([0, 0, 0, 0], at: q) } }
        let lib = try tracee.inject(library: library, symbols: symbols)
        libraries[library] = lib.handle
        return lib.handle
    }

    /// The address of a symbol of the runtime (loading it if needed): its programs, and the
    /// variables through which hookit configures them.
    func runtimeSymbol(_ name: String, symbols: SymbolTable) throws -> UInt64 {
        if let a = runtimeSymbols[name] { return a }
        try loadRuntime(symbols: symbols)
        guard let path = runtimeLibrary, let handle = libraries[path],
              let address = try tracee.dlsym(handle: handle, name: name, symbols: symbols) else {
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
        let handle = try load(path, symbols: symbols)
        runtimeRun = try tracee.dlsym(handle: handle, name: "hookit_rt_run", symbols: symbols)
        if runtimeRun == nil { throw TrampolineError.programNotFound(library: path, symbol: "hookit_rt_run") }
        // Written either way: the runtime stays loaded after a session, with the last one's value.
        if let flag = try tracee.dlsym(handle: handle, name: "hookit_rt_time_enabled", symbols: symbols) {
            try tracee.memory.write([timePrograms ? 1 : 0, 0, 0, 0], at: flag)
        }
        if let cpus = try tracee.dlsym(handle: handle, name: "hookit_rt_cpus", symbols: symbols) {
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
