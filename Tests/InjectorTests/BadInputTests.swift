import Glibc
import TestSupport
import XCTest
@testable import Injector

/// Bad input gets a clear error and leaves the tracee untouched.
final class BadInputTests: XCTestCase {
    func testNonexistentPid() {
        XCTAssertThrowsError(try Tracee.attach(pid: 999_999_9)) { e in
            XCTAssertEqual(e as? InjectorError, .noSuchProcess(pid: 999_999_9))
        }
    }

    func testOwnPid() {
        XCTAssertThrowsError(try Tracee.attach(pid: getpid())) { e in
            XCTAssertEqual(e as? InjectorError, .isSelf(pid: getpid()))
        }
    }

    func testKernelThread() {
        XCTAssertThrowsError(try Tracee.attach(pid: 2)) { e in       // kthreadd
            XCTAssertEqual(e as? InjectorError, .kernelThread(pid: 2))
        }
    }

    func testThirtyTwoBitProcess() throws {
        let target = try TargetProcess("x86_32", waitForReady: false)
        usleep(50_000)
        XCTAssertThrowsError(try Tracee.attach(pid: target.pid)) { e in
            guard case .notX86_64(_, let detail) = e as? InjectorError else { return XCTFail("\(e)") }
            XCTAssertTrue(detail.contains("32-bit"), detail)
        }
        XCTAssertEqual(ProcFS.statusField("/proc/\(target.pid)/status", "TracerPid"), "0")
    }
}
