import Injector
import TestSupport
import XCTest
@testable import RemoteTramp

/// What StackArguments reads from real -O2 code and its .eh_frame: how much of the caller's
/// frame a call-original image must copy for the original.
final class StackArgumentsTests: XCTestCase {
    private func bytes(_ names: [String], in target: String = "hooktarget") throws -> [String: Int32] {
        let process = try TargetProcess(target)
        let symbols = try SymbolTable(pid: process.pid)
        let m = try XCTUnwrap(symbols.executable)
        guard case .file(let path) = m.source else { throw XCTSkip("module not on disk") }
        let frames = FrameInfo(path: path)
        let extents = RegisterUse.extents(symbols.functions(in: m))
        var out: [String: Int32] = [:]
        for n in names {
            let f = try symbols.function("\(m.name):\(n)")
            out[n] = StackArguments.bytesRead(by: f.address..<f.address + f.size, in: m, frames: frames, extents: extents)
        }
        return out
    }

    func testRegisterArgumentsNeedNoCopy() throws {
        let b = try bytes(["add", "fmuladd", "fargs8", "big_make"])
        XCTAssertEqual(b, ["add": 0, "fmuladd": 0, "fargs8": 0, "big_make": 0])
    }

    func testATailCallThatCannotBeFollowedMeansCopyingTheMost() throws {
        XCTAssertEqual(try bytes(["greet"])["greet"], StackArguments.unknown, "`jmp strlen@plt`: strlen's code is not read")
    }

    func testStackArgumentsAreCopiedAsFarAsTheCodeReads() throws {
        let b = try bytes(["sum8", "sum8_tail", "big_by_value"])
        XCTAssertEqual(b["sum8"], 16, "a7 and a8")
        XCTAssertEqual(b["sum8_tail"], 16, "the tail call's target reads them")
        XCTAssertEqual(b["big_by_value"], 48, "a 40-byte struct, rounded up to 16")
    }

    func testAnAddressIntoTheArgumentsMeansCopyingTheMost() throws {
        XCTAssertEqual(try bytes(["vsum"])["vsum"], StackArguments.unknown, "va_start takes the overflow area's address")
    }
}
