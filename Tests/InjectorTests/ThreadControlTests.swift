import CPtrace
import Glibc
import TestSupport
import XCTest
@testable import Injector

/// Seize, stop the world, resume, detach — against real, busy targets.
final class ThreadControlTests: XCTestCase {
    /// Every thread the kernel lists is seized and in a tracing stop.
    private func assertWholeWorldStopped(_ tracee: Tracee, file: StaticString = #filePath, line: UInt = #line) {
        let listed = ProcFS.threads(tracee.pid) ?? []
        XCTAssertFalse(listed.isEmpty, file: file, line: line)
        for tid in listed {
            XCTAssertNotNil(tracee.threads[tid], "thread \(tid) not seized", file: file, line: line)
            XCTAssertEqual(ProcFS.threadState(tracee.pid, tid), "t", "thread \(tid) not stopped", file: file, line: line)
        }
    }

    private func assertDetached(_ target: TargetProcess, file: StaticString = #filePath, line: UInt = #line) {
        // Threads still come and go (churn): one that vanished between the listing and the read is fine.
        for tid in ProcFS.threads(target.pid) ?? [] {
            guard let tracer = ProcFS.statusField("/proc/\(target.pid)/task/\(tid)/status", "TracerPid") else { continue }
            XCTAssertEqual(tracer, "0", "thread \(tid) still traced", file: file, line: line)
            if let state = ProcFS.threadState(target.pid, tid) {
                XCTAssertNotEqual(state, "t", "thread \(tid) left stopped", file: file, line: line)
            }
        }
    }

    func testStopAndResumeUnderThreadChurnCatchEveryThread() throws {
        let target = try TargetProcess("target")
        XCTAssertEqual(try target.send("threads 50"), "threads 50")
        XCTAssertEqual(try target.send("churn 2"), "churning 2")
        let tracee = try Tracee.attach(pid: target.pid)
        assertWholeWorldStopped(tracee)
        XCTAssertGreaterThanOrEqual(tracee.threads.count, 53)
        for _ in 0..<30 {
            try tracee.resumeWorld()
            try tracee.pump(seconds: 0.01)        // threads are born and die meanwhile
            try tracee.stopWorld()
            assertWholeWorldStopped(tracee)
        }
        XCTAssertEqual(tracee.stopStats.count, 30, "the stop in progress is counted when it ends")
        print("stop-the-world with \(tracee.threads.count) threads: longest \(tracee.stopStats.longestNanos / 1000) us, mean \(tracee.stopStats.totalNanos / 30_000) us")
        XCTAssertGreaterThan(tracee.stopStats.longestNanos, 0)
        let report = tracee.detach()
        XCTAssertEqual(report.problems, [])
        assertDetached(target)
        let made = try target.send("quiet")
        XCTAssertTrue(made.hasPrefix("made "), made)
        XCTAssertGreaterThan(Int(made.dropFirst(5)) ?? 0, 100, "the churners made progress while attached")
        XCTAssertEqual(try target.send("add 2 3"), "5")
    }

    func testRepeatedAttachDuringChurnNeverMissesAThreadNorHangs() throws {
        let target = try TargetProcess("target")
        XCTAssertEqual(try target.send("churn 4"), "churning 4")
        for _ in 0..<25 {
            let started = now()
            let tracee = try Tracee.attach(pid: target.pid)
            XCTAssertLessThan(now() - started, 5, "attach took too long")
            assertWholeWorldStopped(tracee)
            tracee.detach()
            assertDetached(target)
        }
        XCTAssertTrue(try target.send("quiet").hasPrefix("made "))
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    /// attachRunning stops nothing; the first stop of the world settles the thread list (a
    /// thread seized inside clone may create its child after the last read), so every thread is
    /// stopped then; a remote syscall meanwhile lends one thread only; detaching thread by thread
    /// leaves none traced or stopped.
    func testAttachRunningUnderChurnStopsNothingUntilTheFirstStopWorldCatchesEveryThread() throws {
        let target = try TargetProcess("target")
        XCTAssertEqual(try target.send("threads 20"), "threads 20")
        XCTAssertEqual(try target.send("churn 4"), "churning 4")
        for round in 0..<15 {
            let tracee = try Tracee.attachRunning(pid: target.pid)
            XCTAssertFalse(tracee.held)
            XCTAssertEqual(tracee.stopStats.count, 0, "attaching stopped the world")
            XCTAssertEqual(try tracee.syscall(39), Int64(target.pid), "getpid on a lent thread")
            try tracee.pump(seconds: 0.005)
            try tracee.stopWorld()
            assertWholeWorldStopped(tracee)
            try tracee.resumeWorld()
            if round % 2 == 0 { try tracee.stopWorld() }        // detach from both states
            XCTAssertEqual(tracee.detach().problems, [])
            assertDetached(target)
        }
        XCTAssertTrue(try target.send("quiet").hasPrefix("made "))
        XCTAssertEqual(try target.send("add 2 3"), "5")
    }

    func testSignalsSentWhileStoppedAreDeliveredAfterResume() throws {
        let target = try TargetProcess("target")
        let tracee = try Tracee.attach(pid: target.pid)
        target.signal(SIGUSR1)
        for _ in 0..<3 { target.signal(hk_sigrtmin()) }     // real-time signals queue: 3 sent, 3 due
        usleep(50_000)
        try tracee.resumeWorld()
        try tracee.pump(seconds: 0.2)
        tracee.detach()
        XCTAssertEqual(try target.send("usr1"), "1")
        XCTAssertEqual(try target.send("rt"), "3")
    }

    func testSignalsToARunningAttachedTargetAreHandedBack() throws {
        let target = try TargetProcess("target")
        let tracee = try Tracee.attach(pid: target.pid)
        try tracee.resumeWorld()
        for _ in 0..<5 {
            target.signal(SIGUSR1)
            try tracee.pump(seconds: 0.05)
        }
        tracee.detach()
        XCTAssertEqual(try target.send("usr1"), "5")
    }

    func testGroupStopAndContinueWorkWhileAttached() throws {
        let target = try TargetProcess("target")
        XCTAssertEqual(try target.send("threads 4"), "threads 4")
        let tracee = try Tracee.attach(pid: target.pid)
        try tracee.resumeWorld()
        target.signal(SIGSTOP)
        try tracee.pump(seconds: 0.3)
        XCTAssertTrue(tracee.threads.values.allSatisfy { $0.groupStopped }, "every thread joined the group stop")
        // Stopping the world and resuming it must not end the group stop.
        try tracee.stopWorld()
        try tracee.resumeWorld()
        try tracee.pump(seconds: 0.1)
        XCTAssertTrue(tracee.threads.values.allSatisfy { $0.groupStopped })
        target.signal(SIGCONT)
        try tracee.pump(seconds: 0.3)
        XCTAssertTrue(tracee.threads.values.allSatisfy { !$0.groupStopped })
        XCTAssertEqual(try target.send("ping"), "pong")
        // Detaching from a stopped process leaves it stopped, as job control expects.
        target.signal(SIGSTOP)
        try tracee.pump(seconds: 0.3)
        tracee.detach()
        usleep(100_000)
        XCTAssertEqual(target.state, "T")
        target.signal(SIGCONT)
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    func testDetachRestoresEveryRegister() throws {
        let target = try TargetProcess("target")
        XCTAssertEqual(try target.send("threads 3"), "threads 3")
        let tracee = try Tracee.attach(pid: target.pid)
        var before: [pid_t: user_regs_struct] = [:]
        for tid in tracee.threads.keys { before[tid] = try Ptrace.registers(tid) }
        let fpBefore = try Ptrace.extendedState(target.pid)
        _ = try tracee.syscall(SyscallNumber.getpid)
        _ = try tracee.mmap(length: 4096, protection: PROT_READ)
        XCTAssertEqual(try Ptrace.extendedState(target.pid), fpBefore, "FP/SSE/AVX state restored")
        for (tid, regs) in before {
            let after = try Ptrace.registers(tid)
            // The borrowed thread (the leader, blocked in read) comes back with its syscall
            // restart applied, as the kernel would have done; the others are untouched.
            let expected = tid == target.pid ? Tracee.applyingSyscallRestart(regs) : regs
            XCTAssertEqual(after.orig_rax, expected.orig_rax, "thread \(tid)")
            XCTAssertEqual(after.rip, expected.rip, "thread \(tid)")
            XCTAssertEqual(after.rsp, expected.rsp)
            XCTAssertEqual(after.rax, expected.rax)
            XCTAssertEqual(after.rbx, expected.rbx)
            XCTAssertEqual(after.rdi, expected.rdi)
            XCTAssertEqual(after.eflags, expected.eflags)
            XCTAssertEqual(after.fs_base, expected.fs_base)
        }
        tracee.detach()
        XCTAssertEqual(try target.send("add 20 22"), "42")
    }
}
