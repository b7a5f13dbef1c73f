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
