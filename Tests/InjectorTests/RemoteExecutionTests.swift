import Glibc
import TestSupport
import XCTest
@testable import Injector

/// Remote syscalls and remote calls on a borrowed thread.
final class RemoteExecutionTests: XCTestCase {
    func testRemoteGetpidReturnsTheTraceesPid() throws {
        let target = try TargetProcess("target")
        let tracee = try Tracee.attach(pid: target.pid)
        XCTAssertEqual(try tracee.syscall(SyscallNumber.getpid), Int64(target.pid))
        tracee.detach()
        // The main thread was blocked in read(2) when borrowed: the read must still work.
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    func testRemoteMmapIsSeenByTheTarget() throws {
        let target = try TargetProcess("target")
        let tracee = try Tracee.attach(pid: target.pid)
        let addr = try tracee.mmap(length: 8192, protection: PROT_READ | PROT_WRITE)
        XCTAssertTrue(try ProcMaps.read(target.pid).contains { $0.start <= addr && $0.end >= addr + 8192 && $0.perms.hasPrefix("rw") })
        try tracee.memory.write(Array("hello".utf8), at: addr)
        XCTAssertEqual(try tracee.memory.readCString(at: addr), "hello")
        try tracee.resumeWorld()
        XCTAssertEqual(try target.send("maps \(addr)"), "mapped")
        try tracee.stopWorld()
        try tracee.munmap(address: addr, length: 8192)
        try tracee.resumeWorld()
        XCTAssertEqual(try target.send("maps \(addr)"), "unmapped")
        tracee.detach()
    }

    func testRemoteMemfdCreateAndCloseAndFailureErrno() throws {
        let target = try TargetProcess("target")
        let tracee = try Tracee.attach(pid: target.pid)
        let fd = try tracee.memfdCreate(name: "hookit-test")
        XCTAssertGreaterThan(fd, 2)
        let link = (try? readLink("/proc/\(target.pid)/fd/\(fd)")) ?? ""
        XCTAssertTrue(link.contains("memfd:hookit-test"), link)
        try tracee.close(fd: fd)
        XCTAssertThrowsError(try tracee.close(fd: fd)) { error in
            XCTAssertEqual(error as? InjectorError, .remoteSyscallFailed(name: "close", tid: target.pid, errno: EBADF))
        }
        tracee.detach()
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    func testRemoteCallIntoTargetFunctionsWithSixArgumentsAndAlignedStack() throws {
        let target = try TargetProcess("target")
        let symbols = try SymbolTable(pid: target.pid)
        let tracee = try Tracee.attach(pid: target.pid)
        XCTAssertEqual(try tracee.call(try symbols.function("target:add").address, [2, 40]), 42)
        XCTAssertEqual(try tracee.call(try symbols.function("target:weigh6").address, [1, 2, 3, 4, 5, 6]),
                       1 + 4 + 9 + 16 + 25 + 36)
        XCTAssertEqual(try tracee.call(try symbols.function("target:aligned_sse").address, [10]), 30,
                       "the callee saw a 16-byte aligned stack")
        tracee.detach()
        XCTAssertEqual(try target.send("calls"), "1", "the target counted the remote call to add")
        XCTAssertEqual(try target.send("add 1 1"), "2")
    }

    func testOtherThreadsRunDuringARemoteCallSoTheirLocksDoNotDeadlockIt() throws {
        let target = try TargetProcess("target")
        let symbols = try SymbolTable(pid: target.pid)
        XCTAssertEqual(try target.send("hold 400"), "held")   // a thread now holds big_lock for 400 ms
        let tracee = try Tracee.attach(pid: target.pid)
        let started = now()
        XCTAssertEqual(try tracee.call(try symbols.function("target:with_lock").address, [41], timeout: 5), 42)
        XCTAssertGreaterThan(now() - started, 0.1, "the call waited for the lock holder")
        tracee.detach()
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    func testTimedOutRemoteCallLeavesTheThreadToRestoreItself() throws {
        let target = try TargetProcess("target")
        let symbols = try SymbolTable(pid: target.pid)
        let tracee = try Tracee.attach(pid: target.pid)
        XCTAssertThrowsError(try tracee.call(try symbols.function("target:slow").address, [800], timeout: 0.2)) { error in
            guard case .remoteCallTimedOut = error as? InjectorError else { return XCTFail("\(error)") }
        }
        tracee.detach()
        // Still inside slow(): the main thread answers once the call returned and the stub put
        // every register back by itself.
        XCTAssertEqual(try target.send("ping", timeout: 5), "pong")
        XCTAssertEqual(try target.send("add 3 4"), "7")
    }

    func testARemoteCallThatFaultsRestoresTheThread() throws {
        let target = try TargetProcess("target")
        let tracee = try Tracee.attach(pid: target.pid)
        XCTAssertThrowsError(try tracee.call(0x10, [])) { error in
            guard case .remoteThreadDied(_, let detail) = error as? InjectorError else { return XCTFail("\(error)") }
            XCTAssertTrue(detail.contains("signal 11"), detail)
        }
        tracee.detach()
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    func testStaticTargetSupportsRemoteSyscalls() throws {
        let target = try TargetProcess("target-static")
        let tracee = try Tracee.attach(pid: target.pid)
        XCTAssertEqual(try tracee.syscall(SyscallNumber.getpid), Int64(target.pid))
        tracee.detach()
        XCTAssertEqual(try target.send("ping"), "pong")
    }
}

func readLink(_ path: String) throws -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink(path, &buf, buf.count - 1)
    if n < 0 { throw TestError("readlink \(path)") }
    return String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
