import Glibc
import Injector
import TestSupport
import XCTest
@testable import RemoteTramp

/// Functions that leave by longjmp or a C++ exception while an fexit image is in their frame:
/// the tracee keeps working, and the image is never freed while a frame could return into it.
final class NonLocalExitTests: XCTestCase {
    func testLongjmpOutOfAHookedFunction() throws {
        let h = try HookHarness()
        try h.link(.fexit, "escape", "record_exit")
        try h.link(.fentry, "add", "count_entry")
        try h.go()
        XCTAssertEqual(try h.target.send("escape 7"), "escaped 7")
        XCTAssertEqual(try h.target.send("escape 8"), "escaped 8")
        XCTAssertEqual(try h.target.send("add 1 2"), "3")
        XCTAssertEqual(try h.target.send("ping"), "pong")
        try h.tracee.stopWorld()
        let report = h.table.detach(waitSeconds: 0.3)
        h.tracee.detach()
        // escape's image counted two entries that never came back: it stays mapped, reported.
        XCTAssertEqual(report.restored, 2)
        XCTAssertEqual(report.leftMapped.count, 1, "\(report)")
        XCTAssertEqual(try h.target.send("escape 9"), "escaped 9")
        XCTAssertEqual(try h.target.send("add 2 2"), "4")
    }

    func testCxxExceptionsUnwindThroughFexitImages() throws {
        let h = try HookHarness("cxxtarget")
        try h.link(.fexit, "cxxtarget:thrower", "record_exit")
        try h.link(.fentry, "cxxtarget:add", "count_entry")
        try h.go()
        XCTAssertEqual(try h.target.send("throw 5"), "10")
        XCTAssertEqual(try h.target.send("throw -3"), "caught negative -3", "the exception crossed the trampoline frame")
        XCTAssertEqual(try h.target.send("relay -1"), "caught negative -1")
        XCTAssertEqual(try h.target.send("relay 4"), "9")
        XCTAssertEqual(try h.target.send("add 1 2"), "3")
        try h.tracee.stopWorld()
        let report = h.table.detach(waitSeconds: 0.3)
        h.tracee.detach()
        XCTAssertEqual(report.restored, 2)
        XCTAssertEqual(report.leftMapped.count, 1, "thrower's image keeps the frames that never returned: \(report)")
        XCTAssertEqual(try h.target.send("throw -2"), "caught negative -2")
        XCTAssertEqual(try h.target.send("ping"), "pong")
    }
}
