import Glibc
import Injector
import TestSupport
import XCTest
@testable import RemoteTramp

/// Hooks under load: threads call the hooked function at full speed while hookit attaches and
/// detaches; no call is lost, counted twice or answered wrongly.
final class ThreadedHookTests: XCTestCase {
    /// Where the target keeps its own count of add() calls (add increments add_calls
    /// atomically). Looked up before any hook is live: dlsym is a remote call, during which the
    /// other threads run.
    private func addCallsAddress(_ tracee: Tracee, _ symbols: SymbolTable) throws -> UInt64 {
        try XCTUnwrap(try tracee.dlsym(handle: 0, name: "add_calls", symbols: symbols))   // RTLD_DEFAULT
    }

    private func runCycles(kind: ProgramKind, program: ProgramSpec) throws {
        let target = try TargetProcess("hooktarget")
        XCTAssertEqual(try target.send("spinbg 8"), "spinning 8")
        let symbols = try SymbolTable(pid: target.pid)
        let add = try symbols.function("hooktarget:add")
        var options = TrampolineTable.Options()
        options.runtimeLibrary = HookHarness.runtime
        for cycle in 0..<5 {
            let tracee = try Tracee.attach(pid: target.pid)
            let table = TrampolineTable(tracee: tracee, symbols: symbols, options: options)
            let counter = try addCallsAddress(tracee, symbols)
            let link = try table.link(kind, program, to: add)
            // Exact accounting needs moments when no call is half-done: the spinners park
            // between two calls ("pause") while the counters are read.
            try tracee.resumeWorld()
            XCTAssertEqual(try target.send("pause"), "paused 8")
            try tracee.stopWorld()
            try table.update()
            let before = try tracee.memory.readU64(at: counter)
            try tracee.resumeWorld()
            XCTAssertEqual(try target.send("resume"), "resumed")
            try tracee.pump(seconds: 0.2)
            XCTAssertEqual(try target.send("pause"), "paused 8")
            try tracee.stopWorld()
            let after = try tracee.memory.readU64(at: counter)
            let counted = try table.stats(link).calls
            XCTAssertGreaterThan(after - before, 1000, "cycle \(cycle): the threads ran while hooked")
            XCTAssertEqual(counted, after - before, "cycle \(cycle): every call made while attached was counted once")
            try tracee.resumeWorld()
            XCTAssertEqual(try target.send("resume"), "resumed")
            try tracee.pump(seconds: 0.05)
            try tracee.stopWorld()                     // detach while the spinners run flat out
            let report = table.detach()
            XCTAssertEqual(report.restored, 1)
            XCTAssertEqual(report.problems, [], "cycle \(cycle)")
            tracee.detach()
        }
        let stopped = try target.send("stop")
        XCTAssertTrue(stopped.hasPrefix("stopped "), stopped)
        XCTAssertEqual(try target.send("spinbad"), "0", "every call returned the right value")
        XCTAssertEqual(try target.send("add 2 2"), "4")
    }

    func testCountUnderEightThreadsAcrossAttachDetachCycles() throws {
        try runCycles(kind: .fentry, program: .count)
    }

    func testFexitProgramUnderEightThreadsAcrossAttachDetachCycles() throws {
        try runCycles(kind: .fexit, program: .user(library: HookHarness.progs, symbol: "pass_through"))
    }

    func testPatchingAndUnpatchingAtFullSpeedNeverBreaksACall() throws {
        let target = try TargetProcess("hooktarget")
        XCTAssertEqual(try target.send("spinbg 8"), "spinning 8")
        let symbols = try SymbolTable(pid: target.pid)
        var options = TrampolineTable.Options()
        options.runtimeLibrary = HookHarness.runtime
        for _ in 0..<20 {
            let tracee = try Tracee.attach(pid: target.pid)
            let table = TrampolineTable(tracee: tracee, symbols: symbols, options: options)
            try table.link(.fentry, .count, to: try symbols.function("hooktarget:add"))
            try table.link(.fexit, .user(library: HookHarness.progs, symbol: "record_exit"), to: try symbols.function("hooktarget:add"))
            try table.update()
            try tracee.resumeWorld()
            try tracee.pump(seconds: 0.02)
            try tracee.stopWorld()
            XCTAssertEqual(table.detach().problems, [])
            tracee.detach()
        }
        XCTAssertTrue(try target.send("stop").hasPrefix("stopped "))
        XCTAssertEqual(try target.send("spinbad"), "0", "no call returned a wrong value")
        XCTAssertEqual(try target.send("regcheck"), "0 7")
    }

    func testStaticTargetWithCount() throws {
        let target = try TargetProcess("target-static")
        let symbols = try SymbolTable(pid: target.pid)
        let tracee = try Tracee.attach(pid: target.pid)
        let table = TrampolineTable(tracee: tracee, symbols: symbols)
        let link = try table.link(.fentry, .count, to: try symbols.function("target-static:add"))
        try table.update()
        try tracee.resumeWorld()
        for i in 0..<10 { XCTAssertEqual(try target.send("add \(i) 1"), "\(i + 1)") }
        try tracee.stopWorld()
        XCTAssertEqual(try table.stats(link).calls, 10)
        XCTAssertTrue(table.detach().unmapped)
        tracee.detach()
        XCTAssertEqual(try target.send("add 2 2"), "4")
    }
}
