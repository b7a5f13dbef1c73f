import Glibc
import Injector
import TestSupport
import XCTest
@testable import RemoteTramp

/// What must be refused, with the kernel's error meanings, leaving the tracee untouched.
final class RefusalTests: XCTestCase {
    func testForeignInt3IsReportedNotOverwritten() throws {
        let h = try HookHarness()
        let f = try h.function("patch5")
        try h.tracee.memory.writeForced([0xCC], at: f.address)       // a debugger's breakpoint
        XCTAssertThrowsError(try h.link(.fentry, "patch5")) { e in
            guard case .foreignPatch(_, let at, let found, _, let what) = e as? TrampolineError else { return XCTFail("\(e)") }
            XCTAssertEqual(at, f.address)
            XCTAssertEqual(found.first, 0xCC)
            XCTAssertTrue(what.contains("int3"), what)
        }
        XCTAssertEqual(try h.tracee.memory.read(at: f.address, count: 1), [0xCC], "the foreign byte is left alone")
        try h.tracee.memory.writeForced([0x90], at: f.address)
        try h.finish()
        XCTAssertEqual(try h.target.send("patch5 2"), "6")
    }

    func testReplaceExcludesOtherKindsBothWaysAndDoubleLinkIsBusy() throws {
        let h = try HookHarness()
        try h.link(.fentry, "patch5")
        XCTAssertThrowsError(try h.link(.fentry, "patch5")) { e in
            guard case .alreadyAttached = e as? TrampolineError else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try h.link(.replace, "patch5", "\(HookHarness.replaceLib):my_add_alone")) { e in
            guard case .busy = e as? TrampolineError else { return XCTFail("\(e)") }
        }
        try h.link(.replace, "nopped", "\(HookHarness.replaceLib):my_add_alone")
        XCTAssertThrowsError(try h.link(.fexit, "nopped", "record_exit")) { e in
            guard case .busy = e as? TrampolineError else { return XCTFail("\(e)") }
        }
        try h.go()
        try h.finish()
        XCTAssertEqual(try h.target.send("nopped 1"), "6")
    }

    func testTooManyProgramsIsE2BIG() throws {
        let target = try TargetProcess("hooktarget")
        let symbols = try SymbolTable(pid: target.pid)
        let tracee = try Tracee.attach(pid: target.pid)
        var options = TrampolineTable.Options()
        options.maxPrograms = 3
        options.runtimeLibrary = HookHarness.runtime
        let table = TrampolineTable(tracee: tracee, symbols: symbols, options: options)
        let f = try symbols.function("hooktarget:patch5")
        for sym in ["count_entry", "order_a", "order_b"] {
            try table.link(.fentry, .user(library: HookHarness.progs, symbol: sym), to: f)
        }
        XCTAssertThrowsError(try table.link(.fentry, .user(library: HookHarness.progs, symbol: "order_c"), to: f)) { e in
            XCTAssertEqual(e as? TrampolineError, .tooManyPrograms(function: "hooktarget:patch5", limit: 3))
        }
        try table.update()
        try tracee.resumeWorld()
        XCTAssertEqual(try target.send("patch5 1"), "3")
        XCTAssertTrue(try target.send("progs").contains("order=ab"), "fentry programs ran in attach order")
        try tracee.stopWorld()
        _ = table.detach()
        tracee.detach()
    }

    func testMissingProgramSymbolIsAClearError() throws {
        let h = try HookHarness()
        XCTAssertThrowsError(try h.link(.fentry, "patch5", "no_such_program")) { e in
            XCTAssertEqual(e as? TrampolineError, .programNotFound(library: HookHarness.progs, symbol: "no_such_program"))
        }
        try h.finish()
        XCTAssertEqual(try h.target.send("patch5 3"), "9")
    }
}
