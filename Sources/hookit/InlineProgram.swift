import Glibc
import Injector

/// `--prog KIND:PATTERN=./file.c:SYMBOL` (and `--replace FUNC=./file.c:SYMBOL`): a hook program
/// given as C source, as Frida's CModule takes it. The file (relative to hookit's working
/// directory, or absolute) is compiled by the system C compiler against include/hookit.h into a
/// shared object in a private directory of hookit's, which is then attached like any
/// `/abs/lib.so:SYMBOL` program. All of this happens
/// while the command line (or an interactive `add`) is parsed: a file that does not compile
/// never gets near the process.
///
/// The shared object stays until hookit exits — the process has it loaded (by that path, or,
/// when it cannot see the path from its mount namespace, through a memfd copy, as any library)
/// and keeps it mapped; the directory goes at exit (a SIGKILLed hookit leaves it behind).
enum InlineProgram {
    /// -mgeneral-regs-only: the program touches no vector or x87 state, so (as RegisterUse
    /// reads from its code) its images need no XSAVE around it.
    static let compilerFlags = ["-mgeneral-regs-only", "-O2", "-fPIC", "-shared"]

    /// A program path that names C source rather than a shared object.
    static func isSource(_ path: String) -> Bool { path.hasSuffix(".c") }

    /// The library a program path names: C source built (`build`), a shared object as it is.
    static func library(_ path: String, symbol: String) throws -> String {
        isSource(path) ? try build(path, symbol: symbol) : path
    }

    /// The shared object built from `source` that defines `symbol`. An unchanged file is built
    /// once; a file changed since (an interactive `add` after an edit) is built again under a new
    /// name, since the process's dlopen of a path it already loaded would return the old code.
    static func build(_ source: String, symbol: String) throws -> String {
        var st = stat()
        guard stat(source, &st) == 0 else { throw InlineProgramError.source(path: source, detail: errnoText(errno)) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw InlineProgramError.source(path: source, detail: "not a regular file") }
        let key = "\(st.st_dev):\(st.st_ino):\(st.st_size):\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        let library: String
        if let built = State.built[key] {
            library = built
        } else {
            library = try compile(source)
            State.built[key] = library
        }
        guard let defined = ElfFile.definedSymbols(path: library), defined.contains(symbol) else {
            throw InlineProgramError.noSymbol(source: source, symbol: symbol)
        }
        return library
    }

    /// cc with `compilerFlags`, its diagnostics passed through as it wrote them (`file:line:
    /// col: error: ...`, the file named as the user named it): into the error when it fails, to
    /// stderr (warnings) when it does not.
    private static func compile(_ source: String) throws -> String {
        let include = try headerDirectory()
        let dir = try privateDirectory()
        State.count += 1
        let stem = source.split(separator: "/").last.map { String($0.dropLast(2)) } ?? "program"
        let output = "\(dir)/\(stem).\(State.count).so"
        State.files.append(output)
        let input = source.hasPrefix("-") ? "./" + source : source     // a file, not an option
        let (status, diagnostics) = try run(["cc"] + compilerFlags + ["-I", include, "-o", output, input])
        guard status == 0 else { throw InlineProgramError.compileFailed(source: source, status: status, diagnostics: diagnostics) }
        if !diagnostics.isEmpty {
            var stderr = StandardError()
            print(diagnostics, terminator: diagnostics.hasSuffix("\n") ? "" : "\n", to: &stderr)
        }
        // Loadable by a process of another user (hookit as root, the process not), whatever
        // hookit's umask.
        chmod(output, 0o755)
        return output
    }

    /// `$HOOKIT_INCLUDE`, else the first `include/hookit.h` found going up from hookit's own
    /// directory, where its runtime library is built too (a build tree: `.build/<triple>/debug/hookit` under the source tree; an
    /// install: `PREFIX/bin/hookit` beside `PREFIX/include`).
    static func headerDirectory() throws -> String {
        var searched: [String] = []
        if let env = getenv("HOOKIT_INCLUDE") {
            let dir = String(cString: env)
            if access("\(dir)/hookit.h", R_OK) == 0 { return dir }
            searched.append(dir)
        }
        var dir = HookSession.runtimeLibraryPath().split(separator: "/", omittingEmptySubsequences: false).dropLast()
        for _ in 0..<6 where !dir.isEmpty {
            let candidate = dir.joined(separator: "/") + "/include"
            if access("\(candidate)/hookit.h", R_OK) == 0 { return candidate }
            searched.append(candidate)
            dir = dir.dropLast()
        }
        throw InlineProgramError.headerMissing(searched: searched)
    }

    /// A directory of hookit's own (mkdtemp under $TMPDIR or /tmp), made at the first build and
    /// removed at exit with everything built into it. 0711: a process of another user can load
    /// a library by its (unguessable) path, but nobody else can list or change the directory.
    private static func privateDirectory() throws -> String {
        if let dir = State.directory { return dir }
        let base = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/hookit-prog-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw InlineProgramError.tempDirectory(path: base, detail: errnoText(errno))
        }
        let dir = String(cString: made)
        chmod(dir, 0o711)
        State.directory = dir
        atexit { InlineProgram.removeBuilt() }
        return dir
    }

    private static func removeBuilt() {
        for f in State.files { unlink(f) }
        if let dir = State.directory { rmdir(dir) }
    }

    /// Runs a program found on PATH with stdout and stderr into one pipe; its exit status (128 +
    /// signal for a kill, like a shell) and everything it wrote. The child starts with no signal
    /// blocked and SIGPIPE at its default, not as hookit keeps them (ChildSignal blocks SIGCHLD
    /// for its signalfd; SIGPIPE is ignored).
    private static func run(_ argv: [String]) throws -> (status: Int32, output: String) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw InlineProgramError.compilerFailedToStart(detail: errnoText(errno)) }
        // Only the child's copies on 1 and 2 (made by dup2, without FD_CLOEXEC) survive its exec.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), pipeSignal = sigset_t()
        sigemptyset(&none)
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &pipeSignal)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let cargs = argv.map { strdup($0) } + [nil]
        defer { for a in cargs { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, &attributes, cargs, environ)
        close(fds[1])
        defer { close(fds[0]) }
        guard rc == 0 else {
            throw rc == ENOENT ? InlineProgramError.noCompiler(name: argv[0])
                               : InlineProgramError.compilerFailedToStart(detail: errnoText(rc))
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (shellExitCode(waitStatus: status), String(decoding: bytes, as: UTF8.self))
    }

    /// What this hookit has built (hookit parses and attaches on one thread).
    private enum State {
        nonisolated(unsafe) static var built: [String: String] = [:]
        nonisolated(unsafe) static var files: [String] = []
        nonisolated(unsafe) static var directory: String?
        nonisolated(unsafe) static var count = 0
    }
}

private func errnoText(_ e: Int32) -> String { String(cString: strerror(e)) }

enum InlineProgramError: Error, CustomStringConvertible {
    case source(path: String, detail: String)
    case compileFailed(source: String, status: Int32, diagnostics: String)
    case noCompiler(name: String)
    case compilerFailedToStart(detail: String)
    case headerMissing(searched: [String])
    case tempDirectory(path: String, detail: String)
    case noSymbol(source: String, symbol: String)

    var description: String {
        switch self {
        case .source(let path, let detail):
            return "cannot read the program source \(path): \(detail)"
        case .compileFailed(let source, let status, let diagnostics):
            let text = diagnostics.hasSuffix("\n") ? String(diagnostics.dropLast()) : diagnostics
            return "\(source) does not compile (cc exited with status \(status)); nothing was attached:\n\(text)"
        case .noCompiler(let name):
            return "no C compiler to build the program with: '\(name)' is not on PATH (install gcc, or build a .so yourself and give /abs/lib.so:SYMBOL)"
        case .compilerFailedToStart(let detail):
            return "cannot run the C compiler: \(detail)"
        case .headerMissing(let searched):
            return "cannot find hookit.h to build the program against (looked in \(searched.joined(separator: ", "))); set HOOKIT_INCLUDE to the directory that holds it"
        case .tempDirectory(let path, let detail):
            return "cannot make a private directory under \(path) for the built program: \(detail)"
        case .noSymbol(let source, let symbol):
            return "\(source) defines no function \(symbol) (a program must be a non-static function: uint64_t \(symbol)(struct hookit_ctx *ctx))"
        }
    }
}
