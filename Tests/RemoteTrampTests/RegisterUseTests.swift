import Injector
import TestSupport
import XCTest
@testable import RemoteTramp

/// What RegisterUse reads from real code: the registers a function and its known callees write,
/// as a -fipa-ra caller would assume them, and the bounds for code it cannot follow.
final class RegisterUseTests: XCTestCase {
    private func written(_ name: String, in target: String = "hooktarget", module: String? = nil,
                         _ bound: RegisterUse.Bound) throws -> RegisterSet {
        let process = try TargetProcess(target)
        let symbols = try SymbolTable(pid: process.pid)
        let m = try XCTUnwrap(module.flatMap { symbols.module(named: $0) } ?? symbols.executable)
        let f = try symbols.function("\(m.name):\(name)")
        return RegisterUse.written(by: f.address..<f.address + f.size, in: m, functions: symbols.functions(in: m), bound: bound)
    }

    func testALeafWritesOnlyWhatItsCodeWrites() throws {
        XCTAssertEqual(try written("ipara_leaf", .assumedByCallers), .rax)
        XCTAssertEqual(try written("ipara_leaf", .atMost), .rax)
        XCTAssertEqual(try written("add", .assumedByCallers), .rax, "lock addq; lea; ret")
        let f = try written("fmuladd", .assumedByCallers)
        XCTAssertTrue(f.contains(.vector(0)) && f.isDisjoint(with: RegisterSet.callerSavedGPRs), "\(f)")
    }

    func testACallThroughThePLTOrAPointerMayChangeEveryCallClobberedRegister() throws {
        XCTAssertEqual(try written("park", .assumedByCallers), .callClobbered, "park calls usleep through the PLT")
        XCTAssertEqual(try written("park", .atMost), .callClobbered)
    }
}

/// Which replace images are a bare jump and which wrap the replacement.
final class ReplaceImageTests: XCTestCase {
    func testAReplacementThatOnlyCallsTheOriginalThroughItsPointerIsABareJump() throws {
        let h = try HookHarness()
        // my_add: `call *hookit_original_add; add $1000, %rax`: the call reaches add itself, which
        // writes only rax, as my_add does.
        let l = try h.link(.replace, "add", "\(HookHarness.replaceLib):my_add")
        XCTAssertEqual(l.givesBack, [], "nothing to give back: \(l.givesBack)")
        try h.go()
        XCTAssertEqual(try h.target.send("add 2 3"), "1005")
        try h.finish()
    }

    func testAReplacementThatMayChangeMoreThanTheOriginalIsWrapped() throws {
        let h = try HookHarness("regcheck")
        let l = try h.link(.replace, "add_leaf", "\(Repo.target("libregreplace.so")):clobber_add")
        XCTAssertTrue(l.givesBack.contains(.rcx) && l.givesBack.contains(.vector(15)), "\(l.givesBack)")
        XCTAssertFalse(l.givesBack.contains(.rax), "rax is the replacement's return value")
        try h.finish()
    }
}

/// Which C programs' images save the vector state: only those whose code may change it.
final class ProgramVectorStateTests: XCTestCase {
    func testOnlyProgramsThatMayChangeVectorStateHaveItSaved() throws {
        let h = try HookHarness()
        let plain = try h.link(.fexit, "add", "record_exit")
        let vectors = try h.link(.fentry, "add", "clobber_vectors")
        let viaPLT = try h.link(.fentry, "sum8", "calls_add")
        XCTAssertFalse(plain.changesVectorState, "record_exit: general registers only")
        XCTAssertTrue(vectors.changesVectorState, "clobber_vectors writes xmm0, xmm5, xmm15")
        XCTAssertTrue(viaPLT.changesVectorState, "calls_add calls dlsym through the PLT: anything")
        try h.go()
        XCTAssertEqual(try h.target.send("add 2 3"), "5")
        try h.finish()
    }
}
