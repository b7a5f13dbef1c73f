import CPtrace
import Foundation
import Glibc
import TestSupport
import XCTest

/// Hundreds of threads, CET/IBT and non-PIE code, C++ exceptions through hooked functions,
/// stripped programs with separate debug files.
final class ThreadsAndBuildsTests: XCTestCase {
    private let progs = Repo.target("libprogs.so")

    /// 400 threads calling tick() in a loop while hookit stops them all to attach and detach;
    /// then every thread calls work() exactly 100 times while hooked: the count is exact.
    /// The threads nap 2 ms every 32 calls, keeping both CPUs busy: with 400 threads that never
    /// sleep, hookit gets 1/400 of a CPU between stops and the same attach takes ~20 s of wall
    /// time (each ptrace call waits for a time slice), though the world stays stopped < 0.5 s.
    func testFourHundredBusyThreadsAttachHookDetach() throws {
        let target = try TargetProcess("manythreads")
        XCTAssertEqual(try target.send("spawn 400"), "spawned 400")
        XCTAssertEqual(try target.send("threads"), "401")
        let ticksBefore = Int(try target.send("ticks"))!
        let started = now()
        let session = try HookitSession(target.pid, ["--count", "manythreads:tick", "--count", "manythreads:work"])
        let attachSeconds = now() - started
        XCTAssertEqual(try target.send("burst 100", timeout: 30), "burst 40000")
        usleep(200_000)
        let detachStarted = now()
        let events = session.detach()
        let detachSeconds = now() - detachStarted
        let ticksAfter = Int(try target.send("ticks"))!
        XCTAssertEqual(try target.send("burst 10", timeout: 30), "burst 4000", "works after detach")

        let attached = try XCTUnwrap(session.event("attached"))
        let detached = try XCTUnwrap(events.last)
        XCTAssertEqual(detached["event"] as? String, "detached")
        let calls = session.calls
        XCTAssertEqual(calls["manythreads:work"], 40000, "every call of every thread, none twice")
        let ticks = calls["manythreads:tick"] ?? 0
        XCTAssertGreaterThan(ticks, 0)
        XCTAssertLessThanOrEqual(ticks, ticksAfter - ticksBefore, "no more than the target itself made")
        let stopped = attached["stopped_ns"] as? Int ?? 0, longest = attached["longest_stop_ns"] as? Int ?? 0
        let detachLongest = detached["longest_stop_ns"] as? Int ?? 0
        XCTAssertGreaterThan(stopped, 0)
        XCTAssertGreaterThan(longest, 0)
        XCTAssertGreaterThan(detachLongest, 0)
        print("manythreads: 401 threads; attach took \(String(format: "%.2f", attachSeconds)) s, world stopped \(stopped) ns "
              + "(longest stop \(longest) ns); detach took \(String(format: "%.2f", detachSeconds)) s, \(detached["stops"] ?? 0) stop(s) in all, longest \(detachLongest) ns; "
              + "tick counted \(ticks) of the target's \(ticksAfter - ticksBefore), work \(calls["manythreads:work"] ?? 0)/40000")
        XCTAssertEqual((detached["left_mapped"] as? [Any])?.count, 0)
        XCTAssertEqual(try target.send("stop", timeout: 30).hasPrefix("stopped "), true)
        XCTAssertEqual(try target.send("threads"), "1")
    }

    /// hooktarget built with -fcf-protection=full, non-PIE: every function starts with endbr64.
    /// This machine's CPU and kernel do not enforce IBT for user space (no user IBT in
    /// /proc/cpuinfo flags and no kernel support for it in 6.x), so an indirect branch to a
    /// missing endbr64 would not fault here; the test proves what can be checked: endbr64 stays
    /// the first instruction of every hooked function while hooked (the patch goes after it),
    /// and the functions, the counts and the C programs work.
    func testCETIBTNonPIETargetKeepsEndbr64First() throws {
        let target = try TargetProcess("hooktarget-ibt")
        let names = ["fib", "add", "endbr_add", "sum8", "nopped", "ripfirst_unused"].filter { $0 != "ripfirst_unused" }
        let symbols = listSymbols(target.pid, "hooktarget-ibt:*")
        XCTAssertTrue(symbols.allSatisfy { $0.address < 0x1000_0000 }, "non-PIE: the file's own addresses")
        let session = try HookitSession(target.pid, ["--count", "hooktarget-ibt:fib", "--count", "hooktarget-ibt:endbr_add",
                                                     "--count", "hooktarget-ibt:sum8", "--count", "hooktarget-ibt:nopped",
                                                     "--prog", "fexit:hooktarget-ibt:add=\(progs):record_exit"])
        for name in names {
            let s = try XCTUnwrap(symbols.first { $0.name == "hooktarget-ibt:\(name)" })
            var first = [UInt8](repeating: 0, count: 9)
            _ = first.withUnsafeMutableBytes { hk_vm_read(target.pid, s.address, $0.baseAddress, 9) }
            XCTAssertEqual(Array(first.prefix(4)), [0xf3, 0x0f, 0x1e, 0xfa], "\(name) still opens with endbr64")
            XCTAssertEqual(first[4], 0xe9, "\(name) jumps to its trampoline right after endbr64")
        }
        XCTAssertEqual(try target.send("fib 10"), "55")
        XCTAssertEqual(try target.send("endbradd 20 22"), "42")
        XCTAssertEqual(try target.send("sum8"), "204")
        XCTAssertEqual(try target.send("nopped 2"), "7")
        XCTAssertEqual(try target.send("add 40 2"), "42")
        XCTAssertTrue(try target.send("progs").contains("exit_ret=42"))
        session.detach()
        let calls = session.calls
        XCTAssertEqual(calls["hooktarget-ibt:fib"], 177, "fib(10) enters fib 177 times")
        XCTAssertEqual(calls["hooktarget-ibt:endbr_add"], 1)
        XCTAssertEqual(calls["hooktarget-ibt:sum8"], 1)
        XCTAssertEqual(calls["hooktarget-ibt:nopped"], 1)
        XCTAssertEqual(calls["hooktarget-ibt:add"], 1)
        XCTAssertEqual(session.refused.count, 0)
        XCTAssertNoThrow(try moduleCodeEqualsFile(pid: target.pid, module: "hooktarget-ibt"))
        XCTAssertEqual(try target.send("fib 10"), "55")
    }

    /// C++ exceptions thrown by a hooked function, through a hooked caller (fexit, so the
    /// unwinder walks through a trampoline frame), with libstdc++'s __cxa_throw and libgcc's
    /// _Unwind_RaiseException counted too.
    func testCxxExceptionsThroughHookedFunctionsAndTheUnwinder() throws {
        let target = try TargetProcess("cxxtarget")
        let session = try HookitSession(target.pid, ["--count", "cxxtarget:thrower",
                                                     "--prog", "fexit:cxxtarget:relay=\(progs):record_exit",
                                                     "--count", "libstdc++.so.6:__cxa_throw",
                                                     "--count", "libgcc_s.so.1:_Unwind_RaiseException",
                                                     "--no-time"])   // timed counts, unwound through, would stay mapped too
        for i in 1...5 {
            XCTAssertEqual(try target.send("throw -\(i)"), "caught negative -\(i)")
            XCTAssertEqual(try target.send("relay -\(i)"), "caught negative -\(i)")
            XCTAssertEqual(try target.send("relay \(i)"), "\(2 * i + 1)")
        }
        // An exception unwound through relay's fexit image 5 times: its in-flight count never
        // came back down, so hookit leaves that image mapped and says so (not a failure).
        let events = session.detach(expectedStatus: 0)
        XCTAssertEqual((events.last?["left_mapped"] as? [Any])?.count, 1, session.printed)
        XCTAssertEqual(events.last?["restored"] as? Int, 4)
        let calls = session.calls
        XCTAssertEqual(calls["cxxtarget:thrower"], 15)
        XCTAssertEqual(calls["cxxtarget:relay"], 5, "the fexit program runs only for returns, not for unwinds")
        XCTAssertEqual(calls.first { $0.key.hasSuffix(":__cxa_throw") }?.value, 10)
        XCTAssertEqual(calls.first { $0.key.hasSuffix(":_Unwind_RaiseException") }?.value, 10)
        XCTAssertEqual(try target.send("relay -9"), "caught negative -9")
        XCTAssertEqual(try target.send("add 2 3"), "5")
    }

    /// gcc splits thrower's throw path into `thrower.cold`, a FUNC symbol in .symtab that is
    /// entered by a jump from thrower's middle: an fexit image there would "return" through
    /// whatever is on the stack. It is refused with that reason; thrower itself is hooked.
    func testColdPartOfASplitFunctionIsRefused() throws {
        let target = try TargetProcess("cxxtarget")
        let session = try HookitSession(target.pid, ["--prog", "fexit:cxxtarget:thrower*=\(progs):record_exit"])
        let refused = Dictionary(session.refused.map { ($0.function, $0.reason) }, uniquingKeysWith: { a, _ in a })
        XCTAssertTrue(refused["cxxtarget:thrower.cold"]?.contains("cold part of a split function") ?? false, "\(refused)")
        for i in 1...3 {
            XCTAssertEqual(try target.send("throw -\(i)"), "caught negative -\(i)")
            XCTAssertEqual(try target.send("throw \(i)"), "\(2 * i)")
        }
        session.detach(expectedStatus: 0)   // the unwound fexit image of thrower stays mapped
        XCTAssertEqual(session.calls["cxxtarget:thrower"], 3, "fexit ran for the three returns")
        XCTAssertEqual(try target.send("add 1 1"), "2")
    }

    /// A stripped PIE without -rdynamic has no function symbol at all; its debug file, placed
    /// at DIR/.build-id/XX/YYYY.debug, gives them back (HOOKIT_DEBUG_DIR points hookit at DIR
    /// instead of /usr/lib/debug).
    func testStrippedProgramIsHookedThroughItsBuildIDDebugFile() throws {
        let target = try TargetProcess("hooktarget-stripped")
        let without = runProgram([Repo.hookit, "symbols", "\(target.pid)", "hooktarget-stripped:fib"])
        XCTAssertEqual(without.status, 1)
        XCTAssertTrue(without.stderr.contains("no function matches"), without.stderr)

        let notes = runProgram(["/usr/bin/readelf", "-n", Repo.target("hooktarget-stripped")]).output
        let id = try XCTUnwrap(notes.split(separator: "\n").first { $0.contains("Build ID:") }?.split(separator: " ").last.map(String.init))
        let root = TempDir("debug")
        let dir = root.file(".build-id/\(id.prefix(2))")
        XCTAssertEqual(runProgram(["/bin/mkdir", "-p", dir]).status, 0)
        XCTAssertEqual(runProgram(["/bin/cp", Repo.target("hooktarget-stripped.debug"), "\(dir)/\(id.dropFirst(2)).debug"]).status, 0)
        setenv("HOOKIT_DEBUG_DIR", root.path, 1)
        defer { unsetenv("HOOKIT_DEBUG_DIR") }

        let symbols = listSymbols(target.pid, "hooktarget-stripped:fib")
        XCTAssertEqual(symbols.count, 1)
        let session = try HookitSession(target.pid, ["--count", "hooktarget-stripped:fib", "--count", "hooktarget-stripped:rip_first"])
        XCTAssertEqual(try target.send("fib 10"), "55")
        XCTAssertEqual(try target.send("ripfirst 5"), "1005")
        session.detach()
        XCTAssertEqual(session.calls["hooktarget-stripped:fib"], 177)
        XCTAssertEqual(session.calls["hooktarget-stripped:rip_first"], 1)
        XCTAssertNoThrow(try moduleCodeEqualsFile(pid: target.pid, module: "hooktarget-stripped"))
    }
}
