import CPtrace
import Glibc

/// Where `spawn` holds the program it started.
public enum SpawnHold: Sendable, Equatable {
    /// At the first instruction of main: libraries loaded, constructors run.
    case main
    /// Before any code of the program or of its libraries runs, with `preload` loaded by the
    /// dynamic loader itself (see `runToStart`). A static program is held at its entry point.
    case beforeInitializers(preload: [PreloadLibrary])
}

/// Starting a program under hookit, held before its first instruction (`hookit run`, see
/// `runToStart`) or where its `main` begins.
///
/// Steps for `.main` (a failure at any of them is undone by `killAndReap`: no child is left behind):
///  1. fork; the child waits on a pipe before doing anything (hk_fork_exec: only
///     async-signal-safe calls in the child, every C array prepared before the fork).
///  2. PTRACE_SEIZE the waiting child, then let it go: it execs. Exec failure comes back as the
///     child's errno through a CLOEXEC pipe (which exec success simply closes).
///  3. At the PTRACE_EVENT_EXEC stop the executable and ld.so are mapped but nothing of the
///     program ran: find `main` in the executable's symbols, put an int3 on its first byte.
///  4. Run. ld.so loads every library, runs every constructor, and libc calls main: the int3
///     traps with rip == main + 1. Any other signal on the way is handed to the program.
///  5. Put the byte back, rip = main, turn the SIGTRAP stop into an interrupt stop, stop any
///     thread a constructor started: the world is held exactly as `attach` + `stopWorld` would
///     leave it (every thread in PTRACE_EVENT_STOP), and dlopen in the tracee works.
///
/// PTRACE_O_EXITKILL, and why it is dropped before returning. Until step 5 the program carries
/// hookit's int3 and has not reached its own code: if hookit died then, the program would die
/// of a stray SIGTRAP anyway (design.md invariant 4 cannot hold for it), and the user asked for
/// it to run *with* hooks. So a dying hookit takes the half-started child with it. From step 5
/// on the byte is restored and the program is as correct as any attached tracee: the options
/// go back to those `attach` uses, and a dying hookit leaves it running (invariant 4). The same
/// holds for `.beforeInitializers`, whose int3 sits on the loader's r_brk until the hold.
extension Tracee {
    /// Starts argv[0] (searched in hookit's PATH when it has no '/', like execvp) with `argv` and
    /// `environment` (nil: hookit's own), under ptrace. stdin and stdout are inherited, or the
    /// given descriptors (dup2'ed onto 0 and 1 in the child); stderr is always inherited.
    /// Returns with the world held where `hold` says: with `.main`, the thread that reached main
    /// at its first instruction (the breakpoint byte already restored, rip == main). The program
    /// is hookit's child: after `detach`, the caller waits for it with waitpid.
    public static func spawn(_ argv: [String], environment: [String]? = nil,
                             stdin inputFD: Int32? = nil, stdout outputFD: Int32? = nil, followForks: Bool = false,
                             holdAt hold: SpawnHold = .main) throws -> Tracee {
        guard let command = argv.first, !command.isEmpty else {
            throw InjectorError.execFailed(command: "(empty command)", errno: ENOENT)
        }
        let path = try resolveCommand(command)
        var environment = environment
        var preloads = PreloadSet()
        if case .beforeInitializers(let libraries) = hold {
            let base = environment ?? currentEnvironment()
            preloads = try PreloadSet(libraries, environment: base)
            environment = preloads.entries.isEmpty ? environment : preloads.environment(base)
        }
        // The child has its copies once forked.
        defer { preloads.closeInHookit() }

        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        let cEnv = environment.map { $0.map { strdup($0) } + [nil] }
        defer { cEnv?.forEach { free($0) } }

        var go: [Int32] = [-1, -1], report: [Int32] = [-1, -1]
        guard cloexecPipe(&go) else { throw InjectorError.execFailed(command: command, errno: errno) }
        guard cloexecPipe(&report) else {
            let e = errno
            Glibc.close(go[0]); Glibc.close(go[1])
            throw InjectorError.execFailed(command: command, errno: e)
        }
        let child: pid_t = path.withCString { cPath in
            if let cEnv { return hk_fork_exec(cPath, cArgs, cEnv, inputFD ?? -1, outputFD ?? -1, go[0], go[1], report[1]) }
            return hk_fork_exec(cPath, cArgs, environ, inputFD ?? -1, outputFD ?? -1, go[0], go[1], report[1])
        }
        let forkErrno = errno
        Glibc.close(go[0]); Glibc.close(report[1])
        defer { Glibc.close(report[0]) }
        var goFD = go[1]
        defer { if goFD >= 0 { Glibc.close(goFD) } }   // closing it unreleased makes the child exit
        if child < 0 { throw InjectorError.execFailed(command: command, errno: forkErrno) }

        let t = Tracee(pid: child)
        // From main on (resetOptions): a fork before main would find nobody to service its child.
        t.followsForks = followForks
        do {
            if try Ptrace.tolerating([EPERM], { try Ptrace.seizeKillingOnExit(child) }) == EPERM {
                throw InjectorError.permissionDenied(pid: child, operation: "trace its own child", hint: Preflight.permissionHint(child))
            }
            t.threads[child] = TraceeThread(tid: child)
            var byte: UInt8 = 1
            _ = Glibc.write(goFD, &byte, 1)
            Glibc.close(goFD)
            goFD = -1
            try t.runToExec(command: command, report: report[0])
            if hold == .main { try t.runToMain(command: command) } else { try t.runToStart(command: command, preloads: preloads) }
        } catch {
            t.killAndReap()
            throw error
        }
        return t
    }

    /// The file execvp would run for `command`: as given when it holds a '/', else the first
    /// executable regular file of that name in hookit's PATH.
    static func resolveCommand(_ command: String) throws -> String {
        if command.contains("/") { return command }
        let searchPath = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin"
        var sawNonExecutable = false
        for dir in searchPath.split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = (dir.isEmpty ? "." : String(dir)) + "/" + command
            var st = stat()
            guard stat(candidate, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFREG && access(candidate, X_OK) == 0 { return candidate }
            sawNonExecutable = true
        }
        throw InjectorError.execFailed(command: command, errno: sawNonExecutable ? EACCES : ENOENT)
    }

    /// Step 2: runs the seized child until its execve succeeded (the PTRACE_EVENT_EXEC stop,
    /// kept) or it exited (execve failed: its errno is on the report pipe).
    private func runToExec(command: String, report: Int32) throws {
        while true {
            try checkInterrupted()
            guard let ev = try waitEvent(until: Clock.now() + 50_000_000) else { continue }
            if ev.tid == pid && hk_wifstopped(ev.status) != 0 && hk_wptrace_event(ev.status) == Int32(HK_PTRACE_EVENT_EXEC) {
                let leader = adopt(pid)
                leader.stopped = true
                leader.interruptPending = false
                return
            }
            try dispatch(tid: ev.tid, status: ev.status)   // any signal is handed back
            if ev.tid == pid && exitStatus != nil {
                var e: Int32 = 0
                if Glibc.read(report, &e, MemoryLayout<Int32>.size) == MemoryLayout<Int32>.size {
                    throw InjectorError.execFailed(command: command, errno: e)
                }
                throw InjectorError.exitedBeforeMain(command: command, status: ev.status)
            }
        }
    }

    /// Steps 3 to 5: breakpoint on main, run to it, undo the breakpoint, hold the world.
    /// A program without a `main` symbol (stripped, as most installed programs are) is run to
    /// its entry point (AT_ENTRY) first, then to glibc's __libc_start_main, whose first
    /// argument is main.
    func runToMain(command: String) throws {
        try Preflight.checkArchitecture(pid)
        var symbols = try SymbolTable(pid: pid, memory: memory)
        let exe = symbols.executable
        var mainAddress = exe.flatMap { e in symbols.functions(in: e).first(where: { $0.name == "main" })?.address }
        var lastTrap: pid_t?
        if mainAddress == nil {
            guard let entry = Self.auxvEntry(pid) else {
                throw InjectorError.noMain(command: command, path: exe?.path ?? executablePath())
            }
            var tid = try runToBreakpoint(at: entry, command: command)
            // At _start the loader has mapped every library: libc's entry to main is there.
            symbols = try SymbolTable(pid: pid, memory: memory)
            guard let start = symbols.modules.lazy.compactMap({ m in symbols.functions(in: m).first { $0.name == "__libc_start_main" } }).first else {
                throw InjectorError.noMain(command: command, path: exe?.path ?? executablePath())
            }
            tid = try runToBreakpoint(at: start.address, command: command, resuming: tid)
            mainAddress = try Ptrace.registers(tid).rdi
            lastTrap = tid
        }
        let main = mainAddress!
        let tid = try runToBreakpoint(at: main, command: command, resuming: lastTrap)
        try holdWorld(from: tid)
        dropExitKill()
    }

    /// Holds the world with `tid` in the stop it is in (a breakpoint's SIGTRAP or the exec
    /// stop) and every other thread stopped, as `stopWorld` leaves it.
    ///
    /// Trades that stop for the PTRACE_EVENT_STOP stopWorld gives: a trap requested while
    /// stopped is taken as soon as the current stop ends, inside the kernel, before any
    /// instruction runs. A SIGTRAP is not the program's: continuing with 0 drops it, so neither
    /// a later release nor hookit's death can hand it to the program.
    private func holdWorld(from tid: pid_t) throws {
        let thread = adopt(tid)
        held = true
        heldSince = Clock.now()
        try Ptrace.interrupt(tid)
        try Ptrace.cont(tid, signal: 0)
        thread.stopped = false
        thread.interruptPending = true
        thread.pendingSignal = 0
        // That thread's trap, and every thread a constructor started.
        try bringAllToStop()
    }

    /// From here on a dying hookit leaves the program running: the options `attach` uses.
    private func dropExitKill() {
        for tid in threads.keys {
            _ = try? Ptrace.tolerating([ESRCH]) { try Ptrace.resetOptions(tid, extra: extraOptions) }
        }
    }

    /// `.beforeInitializers`: runs the exec'ed program until the dynamic loader has mapped and
    /// relocated every library of the start-up set (the preloads first among them) and is about
    /// to run their initializers, and holds it there; a static program (no loader: AT_BASE is 0)
    /// is held at the exec stop, on its entry point.
    ///
    /// The loader tells debuggers of each change of its object list by calling r_debug's r_brk,
    /// `_dl_debug_state`, a bare `ret`: first with r_state RT_ADD before it maps the start-up
    /// set, last with RT_CONSISTENT once the set is relocated and libc's early initialisation
    /// has run, just before it returns to run the initializers (glibc 2.36's dl_main). An int3
    /// there catches each call; one that is not RT_CONSISTENT is passed by doing what the `ret`
    /// would (the int3 stays), and the RT_CONSISTENT one is held, the byte restored and the `ret`
    /// done too, so the thread waits in dl_main and nothing is left at r_brk for the loader
    /// watch to step around. Nothing of the program or its libraries has run then but IFUNC
    /// resolvers and libc's __libc_early_init, called by the loader while it relocates.
    ///
    /// libc has not started: `beforeStart` is set, so nothing calls dlopen or dlsym in it.
    func runToStart(command: String, preloads: PreloadSet) throws {
        try Preflight.checkArchitecture(pid)
        let envp = try Self.environmentArray(memory, stackPointer: Ptrace.registers(pid).rsp)
        guard let base = Self.auxvValue(pid, type: 7), base != 0 else {        // AT_BASE
            try holdWorld(from: pid)
            try settlePreloads(preloads, rDebug: nil, envp: envp)
            beforeStart = true
            dropExitKill()
            return
        }
        let symbols = try SymbolTable(pid: pid, memory: memory)
        guard let loader = symbols.modules.first(where: { $0.contains(base) }),
              let notify = symbols.functions(in: loader).first(where: { $0.name == "_dl_debug_state" }),
              let rDebug = symbols.anySymbol("_r_debug"), loader.contains(rDebug),
              try memory.read(at: notify.address, count: 1) == [0xC3] else {
            throw InjectorError.missingFunction(name: "_dl_debug_state", detail: "its dynamic loader exports no debugger interface (_r_debug, and _dl_debug_state as a bare ret), so hookit cannot hold it before its initializers; start it on its own and attach to its PID")
        }
        let stateAddress = rDebug + LoaderInterface.stateOffset
        func returnFromNotification(_ regs: inout user_regs_struct) throws {
            regs.rip = try memory.readU64(at: regs.rsp)
            regs.rsp += 8
        }
        let tid = try runToBreakpoint(at: notify.address, command: command) { regs in
            if try self.memory.read(at: stateAddress, count: 4) == [0, 0, 0, 0] { return true }
            try returnFromNotification(&regs)
            return false
        }
        var regs = try Ptrace.registers(tid)
        try returnFromNotification(&regs)
        try Ptrace.setRegisters(tid, regs)
        try holdWorld(from: tid)
        try settlePreloads(preloads, rDebug: rDebug, envp: envp)
        beforeStart = true
        dropExitKill()
    }

    /// The initial stack's environment array: at the exec stop rsp points at argc, then argv's
    /// argc pointers and NULL, then envp.
    static func environmentArray(_ memory: RemoteMemory, stackPointer rsp: UInt64) throws -> UInt64 {
        let argc = try memory.readU64(at: rsp)
        return rsp + 8 * (argc + 2)
    }

    /// hookit's own environment.
    static func currentEnvironment() -> [String] {
        var out: [String] = []
        var p = environ
        while let entry = p.pointee {
            out.append(String(cString: entry))
            p += 1
        }
        return out
    }

    /// Puts an int3 at `address`, lets the program run (signals handed back, threads followed)
    /// until a thread traps on it, restores the byte and the thread's rip. Returns that thread,
    /// held in its SIGTRAP stop. `resuming`: the thread held by the previous breakpoint — it
    /// goes on only once this breakpoint is in place, or it could run past it.
    /// `stopsHere` decides at each trap, with the thread's registers (rip already back at
    /// `address`): false means it moved them past the breakpoint, which then stays for the next.
    private func runToBreakpoint(at address: UInt64, command: String, resuming trapped: pid_t? = nil,
                                 stopsHere: (inout user_regs_struct) throws -> Bool = { _ in true }) throws -> pid_t {
        let original = try memory.read(at: address, count: 1)
        try memory.writeForced([0xCC], at: address)
        if let t = trapped { try continueTrapped(t) }
        else { for t in threads.values where t.stopped { try release(t) } }
        while true {
            try checkInterrupted()
            guard let ev = try waitEvent(until: Clock.now() + 50_000_000) else { continue }
            let stopped = hk_wifstopped(ev.status) != 0
            let event = hk_wptrace_event(ev.status)
            if stopped && event == Int32(HK_PTRACE_EVENT_EXEC) {
                // The int3 went away with the old image; the new one is not what was asked for.
                throw InjectorError.execedBeforeMain(command: command, path: executablePath())
            }
            if stopped && event == 0 && hk_wstopsig(ev.status) == SIGTRAP,
               var regs = try? Ptrace.registers(ev.tid), regs.rip == address &+ 1 {
                // Ours: int3 traps with rip past it. Undo it while the thread is stopped.
                adopt(ev.tid).stopped = true
                regs.rip = address
                if try !stopsHere(&regs) {
                    try Ptrace.setRegisters(ev.tid, regs)
                    try continueTrapped(ev.tid)
                    continue
                }
                try memory.writeForced(original, at: address)
                try Ptrace.setRegisters(ev.tid, regs)
                return ev.tid
            }
            try dispatch(tid: ev.tid, status: ev.status)   // signals handed back, threads followed
            if ev.tid == pid && exitStatus != nil {
                throw InjectorError.exitedBeforeMain(command: command, status: ev.status)
            }
        }
    }

    /// Ends a breakpoint's SIGTRAP stop without delivering the trap (it was hookit's).
    private func continueTrapped(_ tid: pid_t) throws {
        try Ptrace.cont(tid, signal: 0)
        adopt(tid).stopped = false
    }

    /// The program's entry point, from the auxiliary vector the kernel gave it (AT_ENTRY).
    static func auxvEntry(_ pid: pid_t) -> UInt64? { auxvValue(pid, type: 9) }

    /// One entry of the auxiliary vector the kernel gave the program (<elf.h>'s AT_*).
    static func auxvValue(_ pid: pid_t, type: UInt64) -> UInt64? {
        let fd = open("/proc/\(pid)/auxv", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var words = [UInt64](repeating: 0, count: 128)
        let n = words.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        for i in stride(from: 0, to: n / 8 - 1, by: 2) where words[i] == type { return words[i + 1] }
        return nil
    }

    /// pipe(2), both ends FD_CLOEXEC (set at once: hookit does not fork from other threads).
    private static func cloexecPipe(_ fds: inout [Int32]) -> Bool {
        guard pipe(&fds) == 0 else { return false }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return true
    }

    /// /proc/PID/exe, as the kernel names it now.
    func executablePath() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/\(pid)/exe", &buf, buf.count - 1)
        return n > 0 ? String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "/proc/\(pid)/exe"
    }

    /// Undoes `spawn` when it cannot finish (or when hookit cannot hook the program it started):
    /// SIGKILL, then reaps every thread (traced threads
    /// stay zombies until their tracer waits for them) and the leader, which is reaped last.
    /// Nothing is killed once the leader was reaped: its pid may belong to someone else.
    public func killAndReap() {
        defer {
            threads.removeAll()
            held = false
            exited = true
        }
        if exitStatus != nil || exited { return }
        kill(pid, SIGKILL)
        let deadline = Clock.now() + 5_000_000_000
        while Clock.now() < deadline {
            for tid in ProcFS.threads(pid) ?? [] where tid != pid {
                var s: Int32 = 0
                _ = waitpid(tid, &s, __WALL | WNOHANG)
            }
            var status: Int32 = 0
            let r = waitpid(pid, &status, __WALL | WNOHANG)
            if r == pid && (hk_wifexited(status) != 0 || hk_wifsignaled(status) != 0) {
                exitStatus = status
                return
            }
            if r < 0 && errno != EINTR { return }   // ECHILD: nothing left to reap
            if r == 0 { usleep(1000) }
        }
    }
}
