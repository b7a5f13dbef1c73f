import CPtrace
import Foundation
import Glibc
import TestSupport
import XCTest

/// hookit as its users drive it: --trace, --count tables, --override, --replace --keep,
/// `hookit run`, Chrome trace files and patterns of thousands of functions — each checked
/// against what the target itself observed.
final class UserFeatureTests: XCTestCase {
    // MARK: - trace

    /// 8 threads call add at full speed: every call arrives as one complete event or is counted
    /// as dropped — exactly — and each thread's events come in its own order.
    func testTraceUnderEightThreadsIsCompleteOrderedAndCountsDrops() throws {
        let target = try TargetProcess("hooktarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--trace", "hooktarget:add", "--sig", "add(long, long) -> long"])
        try attached(h, target)
        XCTAssertEqual(try target.send("spin 8 20000", timeout: 60), "spun 160000 1600080000")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(500).description)
        let all = events(out)
        let calls = all.filter { $0["event"] as? String == "call" }
        let detached = try XCTUnwrap(all.last { $0["event"] as? String == "detached" })
        let dropped = try XCTUnwrap(detached["dropped"] as? Int)
        XCTAssertEqual(detached["traced"] as? Int, calls.count)
        XCTAssertEqual(calls.count + dropped, 160_000, "every call is an event or a counted drop")
        XCTAssertGreaterThan(calls.count, 1000)
        var last: [Int: Int] = [:]
        for c in calls {
            let args = try XCTUnwrap(c["args"] as? [Int])
            XCTAssertEqual(c["function"] as? String, "hooktarget:add")
            XCTAssertEqual(args.count, 2)
            XCTAssertEqual(args[1], 1)
            // A call whose end event the full ring had no room for is still shown, from its
            // entry; its end is unknown, never made up.
            if c["ended"] as? String == "unknown" {
                XCTAssertTrue(c["ret"] is NSNull && c["ns"] is NSNull, "\(c)")
            } else {
                XCTAssertEqual(c["ended"] as? String, "returned")
                XCTAssertEqual(c["ret"] as? Int, args[0] + 1)
                XCTAssertNotNil(c["ns"] as? Int)
            }
            XCTAssertGreaterThan(c["ts"] as? Int ?? 0, 0)
            let tid = try XCTUnwrap(c["tid"] as? Int)
            XCTAssertNotEqual(tid, Int(target.pid), "the spin threads call add, not the main thread")
            if let prev = last[tid] { XCTAssertGreaterThan(args[0], prev, "thread \(tid): events in its own order") }
            last[tid] = args[0]
        }
        XCTAssertLessThanOrEqual(last.count, 8)
        XCTAssertEqual(try target.send("add 2 3"), "5")
        XCTAssertTrue(try codeEqualsFile(target, "add"))
        print("trace: \(calls.count) events, \(dropped) dropped of 160000 calls from 8 threads")
    }

    /// Strings are copied in the tracee; readable text by default; the Chrome trace file holds
    /// the same calls and parses.
    func testTraceStringsTextOutputAndChromeTraceFile() throws {
        let target = try TargetProcess("hooktarget")
        let file = "/tmp/hookit-test-\(getpid()).json"
        defer { unlink(file) }
        let h = Background(["attach", "\(target.pid)", "--trace", "hooktarget:greet", "--trace", "hooktarget:fallible",
                            "--sig", "greet(str) -> long", "--output", file])
        try attached(h, target)
        XCTAssertEqual(try target.send("greet alice"), "5")
        XCTAssertEqual(try target.send("greet bob"), "3")
        XCTAssertEqual(try target.send("fallible 21"), "42 0 0")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        XCTAssertTrue(out.contains("hooktarget:greet(\"alice\") = 5"), out)
        XCTAssertTrue(out.contains("hooktarget:greet(\"bob\") = 3"), out)
        XCTAssertTrue(out.contains("hooktarget:fallible(0x15, "), "no signature: hex\n\(out)")
        XCTAssertTrue(out.contains(") = 0x2a"), out)
        XCTAssertTrue(out.contains("traced 3 call(s), none dropped"), out)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any]
        let trace = try XCTUnwrap(json?["traceEvents"] as? [[String: Any]])
        let greets = trace.filter { $0["name"] as? String == "hooktarget:greet" }
        XCTAssertEqual(greets.count, 2)
        XCTAssertEqual(greets.first?["ph"] as? String, "X")
        XCTAssertEqual(greets.first?["tid"] as? Int, Int(target.pid))
        XCTAssertEqual((greets.first?["args"] as? [String: Any])?["arg0"] as? String, "alice")
        XCTAssertEqual((greets.first?["args"] as? [String: Any])?["ret"] as? Int, 5)
        XCTAssertNotNil(greets.first?["dur"] as? Double)
        XCTAssertEqual(trace.filter { $0["name"] as? String == "hooktarget:fallible" }.count, 1)
    }

    /// hookit with its stdout on a pipe the test reads (or stops reading); the pipe's read end.
    private func hookitWithStdoutPipe(_ args: [String]) throws -> (pid: pid_t, readFD: Int32) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw TestError("pipe: \(errno)") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        let argv: [UnsafeMutablePointer<CChar>?] = ([Repo.hookit] + args).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, Repo.hookit, &actions, nil, argv, environ)
        close(fds[1])
        guard rc == 0 else { close(fds[0]); throw TestError("spawn hookit: \(rc)") }
        return (pid, fds[0])
    }

    /// `hookit attach ... | head`: when stdout closes, hookit detaches cleanly (EPIPE, not a
    /// SIGPIPE death that would leave the patches to the next hookit). An --output file that
    /// cannot be written is refused before anything touches the process.
    func testClosedStdoutDetachesAndBadOutputFileIsRefused() throws {
        let target = try TargetProcess("hooktarget")
        XCTAssertEqual(try target.send("spinbg 2"), "spinning 2")
        let (pid, out) = try hookitWithStdoutPipe(["attach", "\(target.pid)", "--trace", "hooktarget:add"])
        // Read a few lines, then close the pipe, as `head -n 3` does.
        var got = 0, buf = [UInt8](repeating: 0, count: 4096)
        let end = now() + 20
        while got < 3 && now() < end {
            let n = read(out, &buf, buf.count)
            if n <= 0 { break }
            got += buf[..<n].filter { $0 == 10 }.count
        }
        close(out)
        let start = now()
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 && now() - start < 20 { usleep(20_000) }
        XCTAssertLessThan(now() - start, 20, "hookit ended after its stdout closed")
        if waitpid(pid, &status, WNOHANG) == 0 { kill(pid, SIGINT); _ = waitpid(pid, &status, 0) }
        XCTAssertFalse(hk_wifsignaled(status) != 0, "not killed by SIGPIPE")
        XCTAssertTrue(try codeEqualsFile(target, "add"), "detached cleanly: add is as in the file")
        XCTAssertTrue(try target.send("stop").hasPrefix("stopped "))
        XCTAssertEqual(try target.send("spinbad"), "0")

        let bad = runProgram([Repo.hookit, "attach", "\(target.pid)", "--trace", "hooktarget:add", "--output", "/no/such/dir/t.json"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("/no/such/dir/t.json"), bad.stderr)
        XCTAssertTrue(try String(contentsOfFile: "/proc/\(target.pid)/status", encoding: .utf8).contains("TracerPid:\t0\n"))
    }

    /// A reader that stops reading hookit's stdout (a stalled pipe) cannot keep hookit from
    /// detaching on SIGINT: the output it cannot write is dropped, the hooks are removed.
    func testSigintDetachesPromptlyWhileStdoutReaderHasStopped() throws {
        let target = try TargetProcess("hooktarget")
        XCTAssertEqual(try target.send("spinbg 2"), "spinning 2")
        let (pid, out) = try hookitWithStdoutPipe(["attach", "\(target.pid)", "--trace", "hooktarget:add"])
        defer { close(out) }
        // Read until traced calls arrive, then stop reading: the pipe fills and stays full.
        var got = 0, buf = [UInt8](repeating: 0, count: 4096)
        let end = now() + 20
        while got < 5 && now() < end {
            let n = read(out, &buf, buf.count)
            if n <= 0 { break }
            got += buf[..<n].filter { $0 == 10 }.count
        }
        XCTAssertGreaterThanOrEqual(got, 5, "trace lines arrived")
        var size: Int32 = 0
        XCTAssertEqual(ioctl(out, UInt(FIONREAD), &size), 0)
        usleep(500_000)                                   // hookit's own backlog grows meanwhile
        XCTAssertEqual(ioctl(out, UInt(FIONREAD), &size), 0)
        XCTAssertGreaterThan(size, 32 * 1024, "the pipe is full of unread output")
        kill(pid, SIGINT)
        let start = now()
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 && now() - start < 30 { usleep(20_000) }
        let took = now() - start
        if waitpid(pid, &status, WNOHANG) == 0 { kill(pid, SIGKILL); _ = waitpid(pid, &status, 0) }
        XCTAssertLessThan(took, 5, "hookit left within seconds of SIGINT, not when the reader came back")
        XCTAssertTrue(try codeEqualsFile(target, "add"), "detached cleanly: add is as in the file")
        XCTAssertTrue(try String(contentsOfFile: "/proc/\(target.pid)/status", encoding: .utf8).contains("TracerPid:\t0\n"))
        XCTAssertTrue(try target.send("stop").hasPrefix("stopped "))
        XCTAssertEqual(try target.send("spinbad"), "0")
    }

    /// One function of a batch that cannot be patched (its entry is 2 bytes before a page end,
    /// so the 5-byte patch would span two pages) is refused at analysis, before any stop, with
    /// its reason; the rest of the batch is hooked and counts exactly.
    func testAnUnpatchableFunctionIsRefusedWithoutFailingItsBatch() throws {
        let target = try TargetProcess("hooktarget")
        XCTAssertEqual(try target.send("edges 41"), "42 42")
        let h = Background(["attach", "\(target.pid)", "--json", "--count", "hooktarget:edge_*", "--no-time"])
        try attached(h, target)
        for _ in 0..<3 { XCTAssertEqual(try target.send("edges 41"), "42 42") }
        let out = h.finish().output
        let ev = events(out)
        let refused = try XCTUnwrap(ev.first { $0["event"] as? String == "refused" }, out)
        XCTAssertTrue("\(refused)".contains("edge_cross") && "\(refused)".contains("page boundary"), "\(refused)")
        let attachedEvent = try XCTUnwrap(ev.first { $0["event"] as? String == "attached" })
        XCTAssertEqual(attachedEvent["functions"] as? Int, 1)
        let stats = ev.filter { $0["event"] as? String == "stats" }
        XCTAssertEqual(stats.first { ($0["function"] as? String)?.hasSuffix("edge_fine") == true }?["calls"] as? Int, 3, out)
        XCTAssertEqual(try target.send("edges 1"), "2 2")
        XCTAssertTrue(try codeEqualsFile(target, "edge_fine"))
    }

    // MARK: - count

    /// Calls, time and a histogram per function, every --interval and at detach.
    func testCountTableWithHistogramAndInterval() throws {
        let target = try TargetProcess("hooktarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--count", "hooktarget:fib", "--count", "hooktarget:add",
                            "--hist", "--interval", "0.2"])
        try attached(h, target)
        XCTAssertEqual(try target.send("fib 15"), "610")
        XCTAssertEqual(try target.send("add 1 2"), "3")
        XCTAssertTrue(h.waitFor("\"final\":false", timeout: 5), "an interval table")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        let finals = events(out).filter { $0["event"] as? String == "stats" && $0["final"] as? Bool == true }
        let fib = try XCTUnwrap(finals.first { $0["function"] as? String == "hooktarget:fib" })
        XCTAssertEqual(fib["calls"] as? Int, 1973, "fib(15) makes 1973 calls")
        XCTAssertEqual(fib["misses"] as? Int, 0)
        XCTAssertGreaterThan(fib["ns"] as? Int ?? 0, 0)
        XCTAssertGreaterThan(fib["mean_ns"] as? Int ?? 0, 0)
        let hist = try XCTUnwrap(fib["hist"] as? [[Int]])
        XCTAssertEqual(hist.reduce(0) { $0 + $1[2] }, 1973, "every call timed once")
        for b in hist { XCTAssertTrue(b[0] == 0 && b[1] == 1 || b[1] == 2 * b[0], "log2 buckets: \(b)") }
        XCTAssertEqual(finals.first { $0["function"] as? String == "hooktarget:add" }?["calls"] as? Int, 1)

        // The table as people read it.
        let t = Background(["attach", "\(target.pid)", "--count", "hooktarget:fib", "--hist"])
        try attached(t, target)
        XCTAssertEqual(try target.send("fib 10"), "55")
        let text = t.finish().output
        XCTAssertTrue(text.contains("FUNCTION") && text.contains("MEAN"), text)
        XCTAssertTrue(text.contains("hooktarget:fib") && text.contains(" 177 "), "fib(10): 177 calls\n\(text)")
        XCTAssertTrue(text.contains("|@"), "a histogram\n\(text)")
    }

    // MARK: - override

    /// Fault injection: the function is skipped, returns the value, and the caller sees the
    /// errno; --every and --probability pick the calls.
    func testOverrideWithErrnoEveryAndProbability() throws {
        let target = try TargetProcess("hooktarget")
        var h = Background(["attach", "\(target.pid)", "--json", "--override", "hooktarget:fallible=-1", "--errno", "ENOENT"])
        try attached(h, target)
        XCTAssertEqual(try target.send("fallible 21"), "-1 2 1", "skipped: -1 with errno ENOENT")
        var out = h.finish().output
        let o = try XCTUnwrap(events(out).first { $0["event"] as? String == "override" })
        XCTAssertEqual(o["injected"] as? Int, 1)
        XCTAssertEqual(o["errno"] as? Int, 2)
        XCTAssertEqual(try target.send("fallible 21"), "42 0 0", "restored at detach")

        h = Background(["attach", "\(target.pid)", "--json", "--override", "hooktarget:fallible=-7", "--every", "3"])
        try attached(h, target)
        XCTAssertEqual(try target.send("fallible 5 9"), "-7 0 3", "calls 3, 6 and 9 fail; errno untouched")
        out = h.finish().output
        XCTAssertEqual(events(out).first { $0["event"] as? String == "override" }?["calls"] as? Int, 9)

        let bad = runProgram([Repo.hookit, "attach", "\(target.pid)", "--override", "hooktarget:fallible=0x-1"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("VALUE"), "a bad value is refused with the expected form: \(bad.stderr)")
        XCTAssertNotEqual(runProgram([Repo.hookit, "attach", "\(target.pid)", "--override", "hooktarget:fallible=1", "--errno", "ENOPE"]).status, 0)

        h = Background(["attach", "\(target.pid)", "--json", "--override", "hooktarget:fallible=-1", "--probability", "0.5", "--errno", "5"])
        try attached(h, target)
        let reply = try target.send("fallible 5 2000").split(separator: " ")
        out = h.finish().output
        let failed = try XCTUnwrap(Int(reply[2]))
        XCTAssertTrue((800...1200).contains(failed), "about half of 2000: \(failed)")
        XCTAssertEqual(events(out).first { $0["event"] as? String == "override" }?["injected"] as? Int, failed)
        XCTAssertEqual(try target.send("fallible 5"), "10 0 0")
        XCTAssertTrue(try codeEqualsFile(target, "fallible"))
    }

    // MARK: - replace --keep

    /// A live patch stays after hookit exits; the next hookit takes it over and removes it.
    func testReplaceWithKeepStaysAfterHookitAndIsTakenOverLater() throws {
        let target = try TargetProcess("hooktarget")
        let lib = Repo.target("libreplace.so")
        let h = Background(["attach", "\(target.pid)", "--json", "--replace", "hooktarget:add=\(lib):my_add", "--keep"])
        try attached(h, target)
        XCTAssertEqual(try target.send("add 2 3"), "1005")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        XCTAssertEqual(events(out).last?["kept"] as? Int, 1, out)
        XCTAssertTrue(try String(contentsOfFile: "/proc/\(target.pid)/status", encoding: .utf8).contains("TracerPid:\t0\n"))
        XCTAssertEqual(try target.send("add 2 3"), "1005", "the replacement outlives hookit")
        XCTAssertFalse(try codeEqualsFile(target, "add"))

        let again = Background(["attach", "\(target.pid)", "--json", "--count", "hooktarget:add"])
        try attached(again, target)
        XCTAssertEqual(try target.send("add 2 3"), "5", "taken over: the count runs the original")
        XCTAssertEqual(again.finish().status, 0)
        XCTAssertEqual(try target.send("add 2 3"), "5")
        XCTAssertTrue(try codeEqualsFile(target, "add"))

        XCTAssertNotEqual(runProgram([Repo.hookit, "attach", "\(target.pid)", "--count", "hooktarget:add", "--keep"]).status, 0,
                          "--keep without --replace is refused")
    }

    // MARK: - run

    /// `hookit run`: hooks go live before the program's first instruction — the constructor's
    /// getenv calls are seen, then main's — and hookit exits with the program's status. Also for
    /// a program without a main symbol.
    func testRunHooksFromTheFirstInstructionAndExitsWithTheProgramsStatus() throws {
        Repo.buildTargets()
        for program in ["spawnee", "spawnee-nomain"] {
            let r = runProgram([Repo.hookit, "run", "--json", "--count", "libc.so.6:getenv", "--trace", "libc.so.6:getenv",
                                "--", Repo.target(program), "one", "two words"], stdin: "7\n")
            XCTAssertEqual(r.status, 7, "\(program): \(r.output) \(r.stderr)")
            XCTAssertTrue(r.output.contains("arg[two words]"), r.output)
            let all = events(r.output)
            let calls = all.filter { $0["event"] as? String == "call" }
            let constructors = ["SPAWNEE_RAISE", "SPAWNEE_EXIT", "SPAWNEE_EXEC", "SPAWNEE_WAIT"]
            XCTAssertEqual(calls.compactMap { ($0["args"] as? [String])?.first }, constructors + ["SPAWNEE_ENV"],
                           "\(program): the constructor's getenv calls, then main's\n\(r.output)")
            XCTAssertEqual(all.first { $0["event"] as? String == "stats" }?["calls"] as? Int, 5)
            XCTAssertEqual(all.last?["event"] as? String, "exited")
            XCTAssertEqual(all.last?["status"] as? Int, 7)
        }
        let bad = runProgram([Repo.hookit, "run", "--count", "libc.so.6:getenv", "--", "/no/such/program"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("/no/such/program"), bad.stderr)
        let unknown = runProgram([Repo.hookit, "run", "--count", "spawnee:no_such_function", "--", Repo.target("spawnee")], stdin: "0\n")
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertFalse(unknown.output.contains("constructor"), "a program whose hooks fail does not run on without them, not even its constructor")
    }

    // MARK: - another mount namespace

    /// A process in its own mount namespace (as in a container) where hookit's build directory
    /// — and so libhookit_rt.so — does not exist: the runtime goes in through a memfd, and
    /// counts, traces and the ring work as anywhere.
    func testProcessInAnotherMountNamespaceWhereHookitsFilesAreHidden() throws {
        Repo.buildTargets()
        let hidden = "\(Repo.root)/.build"
        let target = try TargetProcess(path: "/usr/bin/unshare", arguments: ["--mount", "--propagation", "private", "sh", "-c",
                                       "mount -t tmpfs none \(hidden) && exec \(Repo.target("hooktarget"))"], waitForReady: true)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/proc/\(target.pid)/root\(hidden)/debug/libhookit_rt.so"),
                       "the runtime library is invisible to the process")
        let h = Background(["attach", "\(target.pid)", "--json", "--count", "hooktarget:add", "--trace", "hooktarget:greet",
                            "--sig", "greet(str) -> long"])
        try attached(h, target)
        XCTAssertEqual(try target.send("add 2 3"), "5")
        XCTAssertEqual(try target.send("greet container"), "9")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        let all = events(out)
        XCTAssertEqual(all.first { $0["event"] as? String == "stats" }?["calls"] as? Int, 1, out)
        XCTAssertEqual(all.first { $0["event"] as? String == "call" }?["args"] as? [String], ["container"], out)
        XCTAssertTrue(try codeEqualsFile(target, "add"))
        XCTAssertEqual(try target.send("add 2 3"), "5")
    }

    // MARK: - patterns

    /// A pattern of 2,000 functions: attached in one go, every call counted, all restored.
    func testPatternOfTwoThousandFunctions() throws {
        let target = try TargetProcess("benchtarget")
        let expected = try target.send("many 1000 3000")
        let h = Background(["attach", "\(target.pid)", "--json", "--count", "benchtarget:many_[12]???"])
        try attached(h, target)
        XCTAssertEqual(try target.send("many 1000 3000"), expected)
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0)
        let all = events(out)
        let attached = try XCTUnwrap(all.first { $0["event"] as? String == "attached" })
        XCTAssertEqual(attached["functions"] as? Int, 2000)
        XCTAssertEqual(attached["refused"] as? Int, 0)
        XCTAssertEqual((attached["patterns"] as? [[String: Any]])?.first?["hooked"] as? Int, 2000)
        let stats = all.filter { $0["event"] as? String == "stats" }
        XCTAssertEqual(stats.count, 2000)
        XCTAssertTrue(stats.allSatisfy { $0["calls"] as? Int == 1 }, "each function called once")
        XCTAssertEqual(all.last?["restored"] as? Int, 2000)
        XCTAssertEqual(try target.send("many 1000 3000"), expected)
        print("2,000 functions: attach stopped the world \(attached["stopped_ns"] ?? 0) ns, longest \(attached["longest_stop_ns"] ?? 0) ns")
    }
}
