import Glibc
import Injector
import TestSupport
import XCTest
@testable import RemoteTramp

/// Hooks on patchable entries (-fpatchable-function-entry=5: five 1-byte nops; -mnop-mcount:
/// one 5-byte nop), each kind's semantics checked through what the target itself returns.
final class PatchableEntryTests: XCTestCase {
    func testCountOnBothNopStylesCountsExactlyTheCallsMade() throws {
        let h = try HookHarness()
        let a = try h.link(.fentry, "patch5")
        let b = try h.link(.fentry, "nopped")
        try h.go()
        for i in 0..<7 { XCTAssertEqual(try h.target.send("patch5 \(i)"), "\(3 * i)") }
        for i in 0..<4 { XCTAssertEqual(try h.target.send("nopped \(i)"), "\(i + 5)") }
        XCTAssertEqual(try h.stats(a).calls, 7)
        XCTAssertEqual(try h.stats(b).calls, 4)
        let report = try h.finish()
        XCTAssertEqual(report.restored, 2)
        XCTAssertTrue(report.unmapped, "\(report)")
        try h.assertCodeMatchesFileAfterDetach(["patch5", "nopped"])
        XCTAssertEqual(try h.target.send("patch5 2"), "6")
    }

    func testFentryFexitAndFmodRetSemantics() throws {
        let h = try HookHarness()
        try h.link(.fentry, "patch5", "count_entry", cookie: 77)
        try h.link(.fexit, "patch5", "record_exit")
        try h.go()
        XCTAssertEqual(try h.target.send("patch5 5"), "15", "fentry/fexit do not change the result")
        let progs = try h.target.send("progs")
        XCTAssertTrue(progs.contains("entry=1 arg0=5 "), progs)
        XCTAssertTrue(progs.contains("cookie=77"), progs)
        XCTAssertTrue(progs.contains("ip=0x" + String(try h.function("patch5").address, radix: 16)), progs)
        XCTAssertTrue(progs.contains("exit=1 exit_arg0=5 "), progs)
        XCTAssertTrue(progs.contains("exit_ret=15"), progs)
        try h.finish()
        XCTAssertEqual(try h.target.send("patch5 1"), "3")
    }

    func testFmodRetSkipsTheOriginalAndFexitSeesTheValue() throws {
        let h = try HookHarness()
        try h.link(.fmodRet, "nopped", "skip_with_42")
        try h.link(.fexit, "nopped", "record_exit")
        try h.go()
        XCTAssertEqual(try h.target.send("nopped 1"), "42")
        XCTAssertTrue(try h.target.send("progs").contains("exit_ret=42"))
        try h.finish()
        XCTAssertEqual(try h.target.send("nopped 1"), "6")
    }
}

extension HookHarness {
    func assertCodeMatchesFileAfterDetach(_ names: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        for n in names {
            let f = try function(n)
            let module = symbols.modules.first { $0.name == f.module }!
            let count = Int(max(f.size, 16))
            let live = try RemoteMemory(pid: target.pid).read(at: f.address, count: count)
            XCTAssertEqual(live, module.fileBytes(at: f.address, count: count), "\(n) restored exactly", file: file, line: line)
        }
    }
}
