import Glibc
import Injector
import TestSupport
import XCTest
@testable import RemoteTramp

/// /tmp/perf-PID.map names the trampolines for perf, and is written without following links.
final class PerfMapTests: XCTestCase {
    private func lines(_ pid: pid_t) -> [String] {
        ((try? String(contentsOfFile: "/tmp/perf-\(pid).map", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func testImagesAreNamedWhileLiveAndRemovedAtDetachKeepingOtherLines() throws {
        let h = try HookHarness()
        let path = "/tmp/perf-\(h.target.pid).map"
        XCTAssertEqual(runProgram(["/bin/sh", "-c", "echo '1000 10 jit_code_of_the_tracee' > \(path)"]).status, 0)
        try h.link(.fentry, "add")
        try h.go()
        let image = try XCTUnwrap(h.table.trampoline(at: try h.function("add").address)?.image)
        let mine = lines(h.target.pid).filter { $0.contains("hookit_trampoline_add_1") }
        XCTAssertEqual(mine, ["\(String(image.address, radix: 16)) \(String(image.size, radix: 16)) hookit_trampoline_add_1"])
        XCTAssertTrue(lines(h.target.pid).contains("1000 10 jit_code_of_the_tracee"))
        XCTAssertTrue(lines(h.target.pid).contains { $0.hasSuffix(" hookit_prologue_add") })
        try h.finish()
        XCTAssertEqual(lines(h.target.pid), ["1000 10 jit_code_of_the_tracee"], "hookit's lines are gone, the tracee's stay")
        unlink(path)
    }

    func testAPlantedSymlinkIsReplacedNotFollowed() throws {
        let victim = "/tmp/hookit-victim-\(getpid())"
        XCTAssertEqual(runProgram(["/bin/sh", "-c", "echo precious > \(victim)"]).status, 0)
        let h = try HookHarness()
        let path = "/tmp/perf-\(h.target.pid).map"
        unlink(path)        // a map an earlier process of this pid left (pids wrap at pid_max)
        XCTAssertEqual(symlink(victim, path), 0)
        try h.link(.fentry, "add")
        try h.go()
        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "precious\n", "the link's target is untouched")
        var st = stat()
        XCTAssertEqual(lstat(path, &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFREG, "the map is a regular file now")
        XCTAssertTrue(lines(h.target.pid).contains { $0.hasSuffix(" hookit_trampoline_add_1") })
        try h.finish()
        XCTAssertEqual(access(path, F_OK), -1, "an empty map hookit owns is removed")
        unlink(victim)
    }
}
