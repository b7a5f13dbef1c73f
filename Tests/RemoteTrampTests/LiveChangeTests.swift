import Glibc
import Injector
import TestSupport
import XCTest
@testable import RemoteTramp

/// Changing the programs of a function while threads call it at full speed: every change
/// builds a new image and swaps the entry in one poke; old images are retired and freed once
/// no thread can be in them; no call is lost, counted twice or answered wrongly.
final class LiveChangeTests: XCTestCase {
    func testCountStaysExactWhileOtherProgramsAreLinkedAndUnlinked() throws {
        let target = try TargetProcess("hooktarget")
        XCTAssertEqual(try target.send("spinbg 8"), "spinning 8")
        let symbols = try SymbolTable(pid: target.pid)
        let add = try symbols.function("hooktarget:add")
        let tracee = try Tracee.attach(pid: target.pid)
        var options = TrampolineTable.Options()
        options.runtimeLibrary = HookHarness.runtime
        let table = TrampolineTable(tracee: tracee, symbols: symbols, options: options)
        let counter = try XCTUnwrap(try tracee.dlsym(handle: 0, name: "add_calls", symbols: symbols))
        let count = try table.link(.fentry, .count, to: add)
        // Load the program library before the exact window: loading it runs remote calls.
        let warm = try table.link(.fexit, .user(library: HookHarness.progs, symbol: "record_exit"), to: add)
        try table.unlink(warm.id)

        try tracee.resumeWorld()
        XCTAssertEqual(try target.send("pause"), "paused 8")
        try tracee.stopWorld()
        try table.update()
        let before = try tracee.memory.readU64(at: counter)
        let countBefore = try table.stats(count).calls
        try tracee.resumeWorld()
        XCTAssertEqual(try target.send("resume"), "resumed")

        var extra: Link?
        var maxRetired = 0
        for i in 0..<300 {
            try tracee.stopWorld()
            if let e = extra {
                try table.unlink(e.id)
                extra = nil
            } else {
                let kind: ProgramKind = i % 4 == 0 ? .fentry : .fexit
                extra = try table.link(kind, .user(library: HookHarness.progs, symbol: kind == .fentry ? "count_entry" : "record_exit"), to: add)
            }
            try table.update()
            maxRetired = max(maxRetired, table.retiredCount)
            try tracee.resumeWorld()
            try tracee.pump(seconds: 0.002)
        }
        XCTAssertEqual(try target.send("pause"), "paused 8")
        try tracee.stopWorld()
        let after = try tracee.memory.readU64(at: counter)
        let counted = try table.stats(count).calls - countBefore
        XCTAssertGreaterThan(after - before, 10_000, "the threads ran throughout")
        XCTAssertEqual(counted, after - before, "every call in the window counted exactly once across 300 image swaps")
        XCTAssertLessThan(maxRetired, 100, "retired images are freed as they become quiescent, not kept until detach")
        XCTAssertEqual(table.detach().problems, [])
        tracee.detach()
        XCTAssertEqual(try target.send("resume"), "resumed")
        XCTAssertTrue(try target.send("stop").hasPrefix("stopped "))
        XCTAssertEqual(try target.send("spinbad"), "0", "every call returned the right value")
    }

    /// The seed's module get/put: a shared object with a hooked function stays loaded even when
    /// the process dlcloses it, and is given back at detach.
    func testHookedLibraryIsPinnedUntilDetach() throws {
        let target = try TargetProcess("hooktarget")
        let lib = Repo.target("libplugin.so")
        XCTAssertEqual(try target.send("load \(lib)"), "loaded")
        let symbols = try SymbolTable(pid: target.pid)
        let tracee = try Tracee.attach(pid: target.pid)
        let table = TrampolineTable(tracee: tracee, symbols: symbols)
        try table.link(.fentry, .count, to: try symbols.function("libplugin.so:plugin_answer"))
        try table.update()
        try tracee.resumeWorld()
        XCTAssertEqual(try target.send("unload"), "unloaded")
        XCTAssertEqual(try target.send("mapped \(lib)"), "mapped", "pinned while hooked")
        try tracee.stopWorld()
        XCTAssertEqual(table.detach().problems, [])
        tracee.detach()
        XCTAssertEqual(try target.send("mapped \(lib)"), "unmapped", "unpinned at detach: the process's dlclose took effect")
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    /// A thread blocked inside the original, called from an fexit image, while that image is
    /// retired: the image is not freed until the thread has come back through it; the thread
    /// gets its right result and skips the programs of the retired image.
    func testThreadParkedInsideTheOriginalKeepsItsRetiredImageAlive() throws {
        let h = try HookHarness()
        let link = try h.link(.fexit, "park", "record_exit")
        try h.go()
        // park starts a thread: its clone event stops the target until the tracer services it.
        try h.target.write("park 700")
        try h.tracee.pump(seconds: 0.2)                // the thread is now in nanosleep inside park
        XCTAssertEqual(try h.target.readLine(timeout: 5), "parking")
        try h.tracee.stopWorld()
        try h.table.unlink(link.id)
        try h.table.link(.fentry, .count, to: try h.function("park"))
        try h.table.update()
        XCTAssertEqual(h.table.retiredCount, 1, "retired, not freed: a thread is inside the original called from it")
        try h.tracee.resumeWorld()
        XCTAssertEqual(try h.target.send("parked"), "busy")
        var result = "busy"
        for _ in 0..<40 where result == "busy" { usleep(50_000); result = try h.target.send("parked") }
        XCTAssertEqual(result, "1400", "the parked call returned its own result through the retired image")
        XCTAssertTrue(try h.target.send("progs").contains("exit=0 "), "the retired image's fexit program was skipped")
        // Freed at a later check, once nothing of the thread can refer to it (the conservative
        // stack scan may still see stale words while the thread is exiting).
        var freed = 0
        for _ in 0..<40 where freed == 0 {
            try h.tracee.pump(seconds: 0.05)
            try h.tracee.stopWorld()
            freed = h.table.collectRetired()
            try h.tracee.resumeWorld()
        }
        XCTAssertEqual(freed, 1, "freed once the thread left")
        XCTAssertEqual(try h.target.send("add 1 2"), "3")
        try h.finish()
    }

    func testRetiredFexitImageSendsLateThreadsStraightToItsEpilogue() throws {
        let h = try HookHarness()
        let link = try h.link(.fexit, "add", "record_exit")
        try h.go()
        try h.tracee.stopWorld()
        let t = try XCTUnwrap(h.table.trampoline(at: try h.function("add").address))
        let old = try XCTUnwrap(t.image)
        let site = try XCTUnwrap(old.afterCall), epilogue = try XCTUnwrap(old.epilogue)
        XCTAssertEqual(try h.tracee.memory.read(at: site, count: 5), PatchSite.nop5)
        try h.table.unlink(link.id)
        try h.table.link(.fentry, .count, to: try h.function("add"))
        try h.table.update()
        // Retirement patched the site before the (quiescent) image was given back to the
        // allocator, which does not overwrite freed code.
        XCTAssertEqual(try h.tracee.memory.read(at: site, count: 5), EntryPatch.jmp(from: site, to: epilogue),
                       "the retired image's after-call site jumps to its epilogue")
        try h.tracee.resumeWorld()
        XCTAssertEqual(try h.target.send("add 2 3"), "5")
        try h.finish()
    }
}
