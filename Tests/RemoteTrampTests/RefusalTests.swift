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

    func testSpentMemoryBudgetIsAClearErrorAndNothingIsPatched() throws {
        let target = try TargetProcess("hooktarget")
        let symbols = try SymbolTable(pid: target.pid)
        let tracee = try Tracee.attach(pid: target.pid)
        var options = TrampolineTable.Options()
        options.memoryBudget = 1000                        // less than one code page
        let table = TrampolineTable(tracee: tracee, symbols: symbols, options: options)
        try table.link(.fentry, .count, to: try symbols.function("hooktarget:patch5"))
        XCTAssertThrowsError(try table.update()) { e in
            guard case .memoryBudget(let limit, _) = e as? TrampolineError else { return XCTFail("\(e)") }
            XCTAssertEqual(limit, 1000)
            XCTAssertFalse("\(e)".contains("--"), "RemoteTramp names no flag; the CLI adds its advice")
        }
        let f = try symbols.function("hooktarget:patch5")
        XCTAssertEqual(try tracee.memory.read(at: f.address, count: 5), PatchSite.nop1x5, "the entry is untouched")
        _ = table.detach()
        tracee.detach()
        XCTAssertEqual(try target.send("patch5 2"), "6")
    }

    func testMissingProgramSymbolIsAClearError() throws {
        let h = try HookHarness()
        XCTAssertThrowsError(try h.link(.fentry, "patch5", "no_such_program")) { e in
            XCTAssertEqual(e as? TrampolineError, .programNotFound(library: HookHarness.progs, symbol: "no_such_program"))
        }
        XCTAssertFalse(try ProcMaps.read(h.target.pid).contains { $0.path.contains("libprogs") || $0.path.contains("hookit_rt") },
                       "refused before anything was loaded into the tracee")
        XCTAssertThrowsError(try h.link(.fmodRet, "patch5")) { e in
            guard case .unsupported(let kind, _, _) = e as? TrampolineError else { return XCTFail("\(e)") }
            XCTAssertEqual(kind, "fmod_ret")
        }
        XCTAssertNil(h.table.trampoline(at: try h.function("patch5").address), "the refused links' trampoline was put back")
        XCTAssertEqual(h.table.codeBytesUsed, 0)
        try h.finish()
        XCTAssertEqual(try h.target.send("patch5 3"), "9")
    }

    /// get/put: a refusal after the trampoline was made (here a relocated entry, whose prologue
    /// block is allocated first) gives the block back; a transaction that fails rolls back
    /// every link it made and leaves the entries as in the file.
    func testRefusedLinksAndRolledBackTransactionsLeaveNothingBehind() throws {
        let h = try HookHarness()
        let add = try h.function("add")
        XCTAssertThrowsError(try h.table.link(.fentry, .user(library: HookHarness.progs, symbol: "no_such_program"), to: add))
        XCTAssertNil(h.table.trampoline(at: add.address))
        XCTAssertEqual(h.table.codeBytesUsed, 0, "the relocated prologue went back to the allocator")
        let change = h.table.begin()
        try change.link(.fentry, .count, to: add)
        try change.link(.fexit, .count, to: try h.function("fallible"))
        change.rollback()
        XCTAssertNil(h.table.trampoline(at: add.address))
        XCTAssertEqual(h.table.links.count, 0)
        XCTAssertEqual(h.table.codeBytesUsed, 0)
        try h.finish()
        XCTAssertEqual(try h.target.send("add 2 3"), "5")
        XCTAssertTrue(try codeMatchesFile(h, "add") && codeMatchesFile(h, "fallible"))
    }

    private func codeMatchesFile(_ h: HookHarness, _ name: String) throws -> Bool {
        let f = try h.function(name)
        let m = try XCTUnwrap(h.symbols.executable)
        return try h.tracee.memory.read(at: f.address, count: 16) == m.fileBytes(at: f.address, count: 16)
    }
}

/// Invariant 1: a thread stopped in the middle of the bytes about to be patched is moved to the
/// instruction that does the same thing before the poke.
final class ThreadMoveTests: XCTestCase {
    /// Points the (stopped) main thread at `pc`, registers the trampoline, returns where the
    /// thread was moved, and puts its registers back before it ever runs.
    private func movedPC(_ h: HookHarness, function: String, pc: (FunctionSymbol) -> UInt64) throws -> (UInt64, Trampoline) {
        let f = try h.function(function)
        try h.link(.fentry, function)
        let tid = h.target.pid
        let saved = try h.tracee.registers(of: tid)
        var regs = saved
        regs.rip = pc(f)
        try h.tracee.setRegisters(regs, of: tid)
        try h.table.update()
        let moved = try h.tracee.registers(of: tid).rip
        try h.tracee.setRegisters(saved, of: tid)
        return (moved, h.table.trampoline(at: f.address)!)
    }

    func testThreadInsideFiveNopsMovesPastThem() throws {
        let h = try HookHarness()
        let (moved, t) = try movedPC(h, function: "patch5") { $0.address + 2 }
        XCTAssertEqual(moved, t.site.afterPatch)
        try h.tracee.resumeWorld()
        XCTAssertEqual(try h.target.send("patch5 1"), "3")
        try h.finish()
    }

    /// A signal handler's frame would `sigreturn` into the middle of the patch: refused, and
    /// the entry is left as it was; once the frame is gone, the same patch goes through.
    func testInterruptedFrameInsideThePatchIsRefused() throws {
        let h = try HookHarness()
        let f = try h.function("patch5")
        let tid = h.target.pid
        let slot = try h.tracee.registers(of: tid).rsp + 8
        let saved = try h.tracee.memory.read(at: slot, count: 8)
        try h.tracee.memory.write([UInt8].le(f.address + 2), at: slot)      // as a sigframe's saved rip would be
        try h.link(.fentry, "patch5")
        XCTAssertThrowsError(try h.table.update()) { e in
            guard case .cannotPatch(_, let reason) = e as? TrampolineError else { return XCTFail("\(e)") }
            XCTAssertTrue(reason.contains("interrupted frame"), reason)
        }
        XCTAssertEqual(try h.tracee.memory.read(at: f.address, count: 5), PatchSite.nop1x5)
        try h.tracee.memory.write(saved, at: slot)
        try h.table.update()
        try h.tracee.resumeWorld()
        XCTAssertEqual(try h.target.send("patch5 2"), "6")
        try h.finish()
    }

    func testThreadInsideDisplacedInstructionsMovesToTheirRelocatedCopy() throws {
        let h = try HookHarness()
        // jcc_first displaces `test rdi, rdi` (3 bytes) and `jz` (2 bytes): a PC on the jz.
        let (moved, t) = try movedPC(h, function: "jcc_first") { $0.address + 3 }
        let block = try XCTUnwrap(t.relocatedBlock)
        XCTAssertTrue(block.contains(moved), "moved into the relocated prologue")
        guard case .relocated(let prologue, _, _) = t.site.style else { return XCTFail("not relocated") }
        XCTAssertEqual(moved, block.lowerBound + UInt64(prologue.pcMap.first { $0.original == 3 }!.relocated))
        XCTAssertEqual(try h.tracee.memory.read(at: moved, count: 2)[0] & 0xF0, 0x00, "a jcc (0f 8x) starts there")
        try h.tracee.resumeWorld()
        XCTAssertEqual(try h.target.send("jccfirst 0"), "2")
        try h.finish()
    }
}
