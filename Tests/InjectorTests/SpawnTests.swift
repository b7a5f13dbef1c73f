import CPtrace
import Glibc
import TestSupport
import XCTest
@testable import Injector

/// Starting a program under hookit, held at the first instruction of its main (`hookit run`).
final class SpawnTests: XCTestCase {
    override func setUp() { Repo.buildTargets() }

    func testSpawnStopsAtMainWithLibrariesLoadedAndTheProgramRunsOnNormally() throws {
        for name in ["target", "target-nopie"] {
            let io = try SpawnedIO()
            let tracee = try io.spawn([Repo.target(name)])
            XCTAssertTrue(tracee.held, name)
            XCTAssertEqual(tracee.threadIDs, [tracee.pid], "\(name): one thread, the leader")
            XCTAssertEqual(tracee.stopStats.count, 0, name)

            let symbols = try SymbolTable(pid: tracee.pid)
            let main = try symbols.function("\(name):main")
            XCTAssertEqual(try tracee.registers(of: tracee.pid).rip, main.address, "\(name): at main's first instruction")
            let exe = try XCTUnwrap(symbols.executable)
            XCTAssertEqual(try tracee.memory.read(at: main.address, count: 16), exe.fileBytes(at: main.address, count: 16),
                           "\(name): main's bytes are the file's (the int3 is gone)")
            XCTAssertTrue(symbols.modules.contains { $0.name.hasPrefix("libc.so") }, "\(name): libc is loaded")
            XCTAssertNil(io.readLine(within: 0.05), "\(name): main has not printed yet")

            let lib = try tracee.inject(library: Repo.target("libplugin.so"), symbols: symbols)
            XCTAssertNotEqual(lib.handle, 0)
            XCTAssertEqual(try tracee.registers(of: tracee.pid).rip, main.address, "\(name): dlopen left the thread at main")

            let stops = tracee.stopStats.count
            try tracee.resumeWorld()
            XCTAssertEqual(tracee.stopStats.count, stops + 1, "the stop at main is counted like any stopWorld")
            XCTAssertEqual(io.readLine(pumping: tracee), "ready \(tracee.pid)", name)
            io.write("ping")
            XCTAssertEqual(io.readLine(pumping: tracee), "pong", name)
            io.write("plugin 5")
            XCTAssertEqual(io.readLine(pumping: tracee), "4205", "\(name): finds the library loaded before main")
            io.write("exit")
            XCTAssertEqual(io.readLine(pumping: tracee), "bye", name)
            let status = try XCTUnwrap(io.waitExit(tracee), name)
            XCTAssertTrue(hk_wifexited(status) != 0 && hk_wexitstatus(status) == 0, "\(name): status \(status)")
        }
    }

    func testConstructorsRunBeforeTheStopAndArgumentsArriveIntact() throws {
        let io = try SpawnedIO()
        let args = ["two words", "", "quote's \"here\"", "ünïcødé"]
        let tracee = try io.spawn([Repo.target("spawnee")] + args, environment: ["SPAWNEE_ENV=hello world"])
        XCTAssertEqual(io.readLine(within: 2), "constructor", "the constructor ran before main")
        XCTAssertNil(io.readLine(within: 0.05), "main has not run")
        try tracee.resumeWorld()
        XCTAssertEqual(io.readLine(pumping: tracee), "main constructed=1 usr1=0 argc=5")
        for a in args { XCTAssertEqual(io.readLine(pumping: tracee), "arg[\(a)]") }
        XCTAssertEqual(io.readLine(pumping: tracee), "env[hello world]", "the given environment, only it")
        io.write("7")
        let status = try XCTUnwrap(io.waitExit(tracee))
        XCTAssertEqual(hk_wexitstatus(status), 7, "the exit status as waitpid reports it")
        XCTAssertEqual(tracee.exitStatus, status)
    }

    func testASignalBeforeMainReachesTheProgram() throws {
        let io = try SpawnedIO()
        let tracee = try io.spawn([Repo.target("spawnee")], environment: ["SPAWNEE_RAISE=1"])
        XCTAssertEqual(io.readLine(within: 2), "constructor")
        try tracee.resumeWorld()
        XCTAssertEqual(io.readLine(pumping: tracee), "main constructed=1 usr1=1 argc=1", "the SIGUSR1 was handed on")
        io.closeInput()
        XCTAssertEqual(io.waitExit(tracee).map { hk_wexitstatus($0) }, 42)
    }

    func testDetachedSpawnedProgramRunsOnAsOurChild() throws {
        let io = try SpawnedIO()
        let tracee = try io.spawn([Repo.target("spawnee"), "x"])
        let pid = tracee.pid
        let report = tracee.detach()
        XCTAssertEqual(report.detachedThreads, 1)
        XCTAssertEqual(report.problems, [])
        XCTAssertEqual(io.readLine(within: 2), "constructor")
        XCTAssertEqual(io.readLine(within: 5), "main constructed=1 usr1=0 argc=2")
        XCTAssertEqual(io.readLine(within: 5), "arg[x]")
        io.write("5")
        XCTAssertEqual(waitFor(pid), 5)
    }

    func testCommandsAreSearchedInPath() throws {
        let old = String(cString: getenv("PATH"))
        setenv("PATH", "/nonexistent-dir:\(Repo.root)/testtargets/build:\(old)", 1)
        defer { setenv("PATH", old, 1) }
        let io = try SpawnedIO()
        let tracee = try io.spawn(["spawnee", "p"])
        XCTAssertEqual(tracee.executablePath(), Repo.target("spawnee"))
        try tracee.resumeWorld()
        XCTAssertEqual(io.readLine(pumping: tracee), "constructor")
        io.write("0")
        XCTAssertEqual(io.waitExit(tracee).map { hk_wexitstatus($0) }, 0)
    }

    func testUnstartableProgramsGetTypedErrorsAndLeaveNoChild() throws {
        let before = childrenOfThisProcess()
        let source = "\(Repo.root)/testtargets/spawnee.c"
        let cases: [([String], [String]?, (InjectorError) -> Bool, String)] = [
            (["/no/such/program"], nil, { $0 == .execFailed(command: "/no/such/program", errno: ENOENT) }, "No such file"),
            (["hookit-no-such-command"], nil, { $0 == .execFailed(command: "hookit-no-such-command", errno: ENOENT) }, "hookit-no-such-command"),
            ([source, "a"], nil, { $0 == .execFailed(command: source, errno: EACCES) }, "Permission denied"),
            (["\(Repo.root)/testtargets/build"], nil, { $0 == .execFailed(command: "\(Repo.root)/testtargets/build", errno: EACCES) }, "Permission denied"),
            ([Repo.target("spawnee-static-nomain")], nil, { if case .noMain = $0 { return true }; return false }, "attach to its PID"),
            ([Repo.target("x86_32")], nil, { if case .notX86_64 = $0 { return true }; return false }, "x86-64"),
            ([Repo.target("spawnee")], ["SPAWNEE_EXIT=9"], { if case .exitedBeforeMain(_, let s) = $0 { return hk_wexitstatus(s) == 9 }; return false }, "exited with status 9 before reaching main"),
            ([Repo.target("spawnee")], ["SPAWNEE_EXEC=\(Repo.target("target"))"], { if case .execedBeforeMain = $0 { return true }; return false }, "testtargets/build/target"),
            ([], nil, { if case .execFailed = $0 { return true }; return false }, "empty"),
        ]
        for (argv, env, matches, fragment) in cases {
            let started = now()
            XCTAssertThrowsError(try Tracee.spawn(argv, environment: env)) { e in
                guard let ie = e as? InjectorError, matches(ie) else { return XCTFail("\(argv): \(e)") }
                XCTAssertTrue(ie.description.contains(fragment), "\(argv): \(ie.description)")
            }
            XCTAssertEqual(childrenOfThisProcess(), before, "\(argv): no child left behind, not even a zombie")
            XCTAssertLessThan(now() - started, 2, "\(argv)")
        }
    }

    /// Without a main symbol (stripped, like most installed programs), main is found as the
    /// first argument of __libc_start_main: held after the constructor, before main's output.
    func testStrippedProgramIsHeldAtMainFoundThroughLibcStartMain() throws {
        let io = try SpawnedIO()
        let tracee = try io.spawn([Repo.target("spawnee-nomain"), "x"])
        XCTAssertTrue(tracee.held)
        let rip = try tracee.registers(of: tracee.pid).rip
        let exe = try XCTUnwrap(try SymbolTable(pid: tracee.pid, memory: tracee.memory).executable)
        XCTAssertTrue(exe.contains(rip), "held inside the program itself")
        let nm = runProgram(["/usr/bin/nm", Repo.target("spawnee")]).output.split(separator: "\n")
        let full = try XCTUnwrap(nm.first { $0.hasSuffix(" T main") }.flatMap { UInt64($0.prefix(16), radix: 16) })
        XCTAssertEqual(rip, exe.bias + full, "at main (its address from the unstripped twin)")
        try tracee.resumeWorld()
        XCTAssertEqual(io.readLine(pumping: tracee), "constructor")
        XCTAssertEqual(io.readLine(pumping: tracee), "main constructed=1 usr1=0 argc=2")
        io.write("0")
        XCTAssertEqual(io.waitExit(tracee).map { hk_wexitstatus($0) }, 0)
    }

    func testASignalSentWhileHeldAtMainIsDeliveredBeforeMainRuns() throws {
        let io = try SpawnedIO()
        let tracee = try io.spawn([Repo.target("spawnee")])
        kill(tracee.pid, SIGUSR1)   // the constructor installed a handler; main has not run
        try tracee.pump(seconds: 0.05)
        try tracee.resumeWorld()
        XCTAssertEqual(io.readLine(pumping: tracee), "constructor")
        XCTAssertEqual(io.readLine(pumping: tracee), "main constructed=1 usr1=1 argc=1")
        io.write("3")
        XCTAssertEqual(io.waitExit(tracee).map { hk_wexitstatus($0) }, 3)
    }

    // A hookit that dies: a stand-in for it — this test bundle run again, for the one test
    // `testStandInForADyingHookit` — spawns spawnee on its own stdin and stdout (pipes to this
    // test), then dies without detaching; the kernel detaches (or, with EXITKILL, kills) its
    // tracees as for any dying tracer.

    func testAHookitThatDiesHoldingTheProgramAtMainLeavesItRunning() throws {
        let standIn = try startStandIn(environment: ["HOOKIT_SPAWN_STANDIN=exit-at-main"])
        XCTAssertEqual(try Self.line(from: standIn, after: "constructor"), "main constructed=1 usr1=0 argc=1",
                       "no stray SIGTRAP, no stopped thread: the program runs on from main")
        XCTAssertEqual(try standIn.readLine(timeout: 5), "env[]")
        XCTAssertEqual(standIn.waitExit(timeout: 5), 0, "the stand-in spawned the program, then died holding it")
        try standIn.write("0")
        XCTAssertThrowsError(try standIn.readLine(timeout: 5), "the program exited normally (its output closed)")
    }

    func testAHookitThatDiesBeforeMainTakesTheHalfStartedProgramWithIt() throws {
        let standIn = try startStandIn(environment: ["HOOKIT_SPAWN_STANDIN=wait", "SPAWNEE_WAIT=1"])
        XCTAssertNotNil(try Self.line(from: standIn, after: nil, matching: "constructor"), "held in its constructor, before main")
        let program = try XCTUnwrap(children(of: standIn.pid).first)
        standIn.kill()
        XCTAssertThrowsError(try standIn.readLine(timeout: 2)) { e in
            XCTAssertTrue("\(e)".contains("closed its output"), "PTRACE_O_EXITKILL: the program died with hookit, not \(e)")
            if !"\(e)".contains("closed its output") { kill(program, SIGKILL) }
        }
    }

    /// Not a test by itself: the stand-in for a dying hookit, when HOOKIT_SPAWN_STANDIN is set.
    func testStandInForADyingHookit() throws {
        guard let mode = getenv("HOOKIT_SPAWN_STANDIN").map({ String(cString: $0) }) else { return }
        unsetenv("HOOKIT_SPAWN_STANDIN")
        let tracee = try Tracee.spawn([Repo.target("spawnee")])
        precondition(mode == "exit-at-main")
        withExtendedLifetime(tracee) { _exit(0) }   // no detach: as if hookit were killed now
    }

    private func startStandIn(environment: [String]) throws -> TargetProcess {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        let bundle = String(decoding: buf[..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        for e in environment { putenv(strdup(e)) }
        defer { for e in environment { unsetenv(String(e.prefix { $0 != "=" })) } }
        return try TargetProcess(path: bundle, arguments: ["InjectorTests.SpawnTests/testStandInForADyingHookit"])
    }

    /// The line after the line `after` (or the first line equal to `matching`), skipping the
    /// stand-in's own XCTest chatter.
    private static func line(from p: TargetProcess, after: String?, matching: String? = nil) throws -> String {
        while true {
            let l = try p.readLine(timeout: 5)
            if let after, l == after { return try p.readLine(timeout: 5) }
            if let matching, l == matching { return l }
        }
    }
}

/// A spawned program's stdin and stdout on pipes, read while the tracee is pumped.
private final class SpawnedIO {
    private var toChild: [Int32] = [-1, -1]
    private var fromChild: [Int32] = [-1, -1]
    private var buffer: [UInt8] = []
    private var tracee: Tracee?

    init() throws {
        guard pipe(&toChild) == 0, pipe(&fromChild) == 0 else { throw TestError("pipe") }
        for fd in toChild + fromChild { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }

    deinit {
        if let t = tracee, !t.exited {
            kill(t.pid, SIGKILL)
            t.detach()
            var s: Int32 = 0
            _ = waitpid(t.pid, &s, 0)
        }
        for fd in toChild + fromChild where fd >= 0 { close(fd) }
    }

    func spawn(_ argv: [String], environment: [String]? = nil) throws -> Tracee {
        let t = try Tracee.spawn(argv, environment: environment, stdin: toChild[0], stdout: fromChild[1])
        close(toChild[0]); toChild[0] = -1
        close(fromChild[1]); fromChild[1] = -1
        tracee = t
        return t
    }

    func write(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(toChild[1], $0.baseAddress, $0.count) }
    }

    func closeInput() { close(toChild[1]); toChild[1] = -1 }

    /// One line, waiting up to `seconds`, without servicing the tracee (it is held or detached).
    func readLine(within seconds: Double) -> String? { readLine(seconds: seconds, pumping: nil) }

    /// One line, servicing the tracee's ptrace events meanwhile, as hookit run would.
    func readLine(pumping tracee: Tracee, seconds: Double = 5) -> String? { readLine(seconds: seconds, pumping: tracee) }

    private func readLine(seconds: Double, pumping tracee: Tracee?) -> String? {
        let deadline = now() + seconds
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                defer { buffer.removeSubrange(...nl) }
                return String(decoding: buffer[..<nl], as: UTF8.self)
            }
            var pfd = pollfd(fd: fromChild[0], events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 10) > 0 {
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = chunk.withUnsafeMutableBytes { read(fromChild[0], $0.baseAddress, $0.count) }
                if n <= 0 { return nil }
                buffer += chunk[..<n]
                continue
            }
            if let tracee, !tracee.exited { try? tracee.pump(seconds: 0.01) }
            if now() >= deadline { return nil }
        }
    }

    /// Pumps until the tracee exited; its exit status.
    func waitExit(_ tracee: Tracee, seconds: Double = 5) -> Int32? {
        let deadline = now() + seconds
        while !tracee.exited && now() < deadline { try? tracee.pump(seconds: 0.05) }
        return tracee.exitStatus
    }
}

/// PIDs whose parent is this process, zombies included (from /proc/PID/stat).
private func childrenOfThisProcess() -> Set<pid_t> { children(of: getpid()) }

/// PIDs whose parent is `parent`, zombies included (from /proc/PID/stat).
private func children(of parent: pid_t) -> Set<pid_t> {
    var out = Set<pid_t>()
    guard let dir = opendir("/proc") else { return out }
    defer { closedir(dir) }
    while let ent = readdir(dir) {
        let name = withUnsafeBytes(of: ent.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        guard let pid = pid_t(name), let stat = try? ProcFS.read("/proc/\(pid)/stat"),
              let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        if fields.count > 1, pid_t(fields[1]) == parent { out.insert(pid) }
    }
    return out
}
