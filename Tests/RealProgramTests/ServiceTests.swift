import CPtrace
import Foundation
import Glibc
import TestSupport
import XCTest

/// Processes of another user, in another mount namespace, with files deleted under them, and
/// functions something else patched first.
final class ServiceTests: XCTestCase {
    private let nginx = "/usr/sbin/nginx", curl = "/usr/bin/curl"

    private func uid(_ pid: pid_t) -> Int? {
        let status = (try? readProc("/proc/\(pid)/status")) ?? ""
        return status.split(separator: "\n").first { $0.hasPrefix("Uid:") }?.split(separator: "\t").dropFirst().first.flatMap { Int($0) }
    }

    /// nginx's master runs as root, its worker as www-data: hookit (root) hooks the worker's
    /// libc socket, file and allocation functions while curl sends 300 requests over keep-alive
    /// connections, and every answer is right.
    func testNginxWorkerOfAnotherUserUnderRequests() throws {
        try require(nginx, curl)
        Repo.buildTargets()
        let dir = TempDir("nginx")
        let port = freePort()
        XCTAssertEqual(runProgram(["/bin/mkdir", "-p", dir.file("www"), dir.file("logs")]).status, 0)
        try dir.write("www/file.txt", String(repeating: "0123456789abcdef\n", count: 256))
        try dir.write("nginx.conf", """
            daemon off;
            master_process on;
            worker_processes 1;
            user www-data;
            pid \(dir.file("nginx.pid"));
            error_log \(dir.file("logs/error.log"));
            events { worker_connections 64; }
            http {
              access_log \(dir.file("logs/access.log"));
              sendfile off;
              client_body_temp_path \(dir.file("body")); proxy_temp_path \(dir.file("proxy"));
              fastcgi_temp_path \(dir.file("fastcgi")); uwsgi_temp_path \(dir.file("uwsgi")); scgi_temp_path \(dir.file("scgi"));
              server {
                listen 127.0.0.1:\(port);
                root \(dir.file("www"));
                location = /hello { return 200 "hello\\n"; }
              }
            }
            """)
        let master = try Daemon([nginx, "-p", dir.path, "-e", dir.file("logs/error.log"), "-c", dir.file("nginx.conf")])
        var worker: pid_t = 0
        XCTAssertTrue(waitUntil(10) {
            let children = (try? readProc("/proc/\(master.pid)/task/\(master.pid)/children")) ?? ""
            worker = children.split(separator: " ").compactMap { pid_t($0) }.first ?? 0
            return worker != 0 && runProgram([curl, "-s", "http://127.0.0.1:\(port)/hello"]).output == "hello\n"
        }, "nginx answers")
        XCTAssertEqual(uid(master.pid), 0)
        XCTAssertEqual(uid(worker), 33, "the worker runs as www-data")

        let session = try HookitSession(worker, ["--count", "libc.so.6:recv", "--count", "libc.so.6:writev",
                                                 "--count", "libc.so.6:open*", "--count", "libc.so.6:pread*",
                                                 "--count", "libc.so.6:accept4", "--count", "libc.so.6:epoll_wait",
                                                 "--count", "libc.so.6:malloc", "--count", "libc.so.6:free",
                                                 "--count", "libc.so.6:close"])
        // 3 connections × 100 requests: 50 for /hello, 50 for a 4 KiB file, each.
        let urls = (0..<100).map { "http://127.0.0.1:\(port)/" + ($0 % 2 == 0 ? "hello" : "file.txt") }
        var answers = 0
        for _ in 0..<3 {
            let r = runProgram([curl, "-s", "-w", "%{http_code}\n", "-o", "/dev/null"] + urls)
            XCTAssertEqual(r.status, 0, r.stderr)
            answers += r.output.split(separator: "\n").filter { $0 == "200" }.count
        }
        let body = runProgram([curl, "-s", "http://127.0.0.1:\(port)/file.txt"]).output
        XCTAssertEqual(body, String(repeating: "0123456789abcdef\n", count: 256))
        answers += 1
        session.detach()
        XCTAssertEqual(answers, 301, "every answer was 200")
        let calls = session.calls
        print("nginx worker (uid 33): \(answers) requests on 4 connections; " + calls.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        XCTAssertGreaterThanOrEqual(calls["libc.so.6:recv"] ?? 0, answers, "one recv per request at least")
        XCTAssertGreaterThanOrEqual(calls["libc.so.6:accept4"] ?? 0, 4)
        XCTAssertGreaterThanOrEqual(calls.filter { $0.key.hasPrefix("libc.so.6:open") }.values.reduce(0, +), 151, "the file is opened per request")
        XCTAssertGreaterThanOrEqual(calls.filter { $0.key.hasPrefix("libc.so.6:pread") }.values.reduce(0, +), 151, "and read (sendfile off)")
        XCTAssertGreaterThanOrEqual(calls["libc.so.6:writev"] ?? 0, answers / 2)
        XCTAssertNoThrow(try moduleCodeEqualsFile(pid: worker, module: "libc.so.6"))
        XCTAssertEqual(runProgram([curl, "-s", "http://127.0.0.1:\(port)/hello"]).output, "hello\n")
        let log = (try? String(contentsOfFile: dir.file("logs/error.log"), encoding: .utf8)) ?? ""
        XCTAssertFalse(log.contains("[alert]") || log.contains("[crit]") || log.contains("exited on signal"), log)
        XCTAssertEqual(uid(worker), 33, "the same worker serves on")
    }

    /// A process in its own mount namespace, started from a tmpfs hookit's namespace does not
    /// see, whose executable and LD_PRELOADed library were deleted after start: hookit reads
    /// them through /proc/PID/map_files and hooks it.
    func testProcessInAnotherMountNamespaceWithDeletedFiles() throws {
        Repo.buildTargets()
        let mnt = TempDir("ns")
        let exe = "\(mnt.path)/hooktarget", lib = "\(mnt.path)/libprogs-copy.so"
        let script = "mount -t tmpfs hookit-test \(mnt.path) && cp \(Repo.target("hooktarget")) \(exe) && "
            + "cp \(Repo.target("libprogs.so")) \(lib) && (sleep 0.3; rm \(exe) \(lib)) & "
            + "sleep 0.1; LD_PRELOAD=\(lib) exec \(exe)"
        let target = try TargetProcess(path: "/usr/bin/unshare", arguments: ["--mount", "--propagation", "private", "/bin/sh", "-c", script],
                                       waitForReady: true)
        XCTAssertTrue(waitUntil(5) { ((try? readProc("/proc/\(target.pid)/maps")) ?? "").contains("libprogs-copy.so (deleted)") })
        XCTAssertFalse(FileManager.default.fileExists(atPath: exe), "hookit's namespace does not see the tmpfs")
        let ownNS = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/mnt")
        XCTAssertNotEqual(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(target.pid)/ns/mnt"), ownNS)

        let symbols = runProgram([Repo.hookit, "symbols", "\(target.pid)", "libprogs-copy.so:count_entry"])
        XCTAssertEqual(symbols.status, 0, symbols.stderr)
        let session = try HookitSession(target.pid, ["--count", "hooktarget:add", "--count", "hooktarget:fib",
                                                     "--count", "libprogs-copy.so:progs_reset"])
        for i in 1...10 { XCTAssertEqual(try target.send("add \(i) \(i)"), "\(2 * i)") }
        XCTAssertEqual(try target.send("fib 10"), "55")
        session.detach()
        XCTAssertEqual(session.calls["hooktarget:add"], 10)
        XCTAssertEqual(session.calls["hooktarget:fib"], 177)
        XCTAssertNotNil(session.calls["libprogs-copy.so:progs_reset"], "a function of the deleted library was hooked")
        XCTAssertNoThrow(try moduleCodeEqualsFile(pid: target.pid, module: "hooktarget", file: Repo.target("hooktarget")))
        XCTAssertEqual(try target.send("add 2 2"), "4")
    }

    /// A real uprobe (tracefs uprobe_events: the kernel writes an int3 into the process) on one
    /// function, another tool's jmp on a second: both are refused, naming what was found, and
    /// left in place; the rest is hooked.
    func testUprobeAndForeignJmpAreRefusedAndNamed() throws {
        let tracing = "/sys/kernel/tracing"
        guard access("\(tracing)/uprobe_events", W_OK) == 0 else { throw XCTSkip("no writable tracefs uprobe_events") }
        let target = try TargetProcess("hooktarget")
        let nm = runProgram(["/usr/bin/nm", Repo.target("hooktarget")]).output
        func fileOffset(_ name: String) throws -> UInt64 {
            let line = try XCTUnwrap(nm.split(separator: "\n").first { $0.hasSuffix(" T \(name)") })
            return UInt64(line.split(separator: " ")[0], radix: 16)!    // PIE: .text vaddr == file offset
        }
        let event = "hookit_test/fib\(getpid())"
        func tracefs(_ file: String, _ text: String) -> Bool {
            let fd = open("\(tracing)/\(file)", O_WRONLY | O_APPEND)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            return text.withCString { write(fd, $0, strlen($0)) } == text.utf8.count
        }
        XCTAssertTrue(tracefs("uprobe_events", "p:\(event) \(Repo.target("hooktarget")):0x\(String(try fileOffset("fib"), radix: 16))\n"))
        defer {
            _ = tracefs("events/\(event)/enable", "0\n")
            _ = tracefs("uprobe_events", "-:\(event)\n")
        }
        XCTAssertTrue(tracefs("events/\(event)/enable", "1\n"))

        // Another hooker's jmp over sum8's first 5 bytes (to add: never taken in this test).
        let sum8 = try XCTUnwrap(listSymbols(target.pid, "hooktarget:sum8").first).address
        let add = try XCTUnwrap(listSymbols(target.pid, "hooktarget:add").first).address
        let fib = try XCTUnwrap(listSymbols(target.pid, "hooktarget:fib").first).address
        var original = [UInt8](repeating: 0, count: 5)
        _ = original.withUnsafeMutableBytes { hk_vm_read(target.pid, sum8, $0.baseAddress, 5) }
        let rel = Int32(truncatingIfNeeded: Int64(bitPattern: add &- (sum8 + 5)))
        let jmp: [UInt8] = [0xe9] + withUnsafeBytes(of: rel.littleEndian) { Array($0) }
        let mem = open("/proc/\(target.pid)/mem", O_RDWR)
        XCTAssertGreaterThanOrEqual(mem, 0)
        defer { close(mem) }
        XCTAssertEqual(jmp.withUnsafeBytes { pwrite(mem, $0.baseAddress, 5, off_t(sum8)) }, 5)
        var fibEntry: UInt8 = 0
        _ = hk_vm_read(target.pid, fib, &fibEntry, 1)
        XCTAssertEqual(fibEntry, 0xcc, "the uprobe's int3 is in the process")

        // One pattern for all of hooktarget: a refused function is then reported, not fatal.
        let session = try HookitSession(target.pid, ["--count", "hooktarget:*"])
        let refused = Dictionary(session.refused.map { ($0.function, $0.reason) }, uniquingKeysWith: { a, _ in a })
        XCTAssertTrue(refused["hooktarget:fib"]?.contains("already patched by something else (an int3 breakpoint: a debugger or a uprobe)") ?? false, "\(refused)")
        XCTAssertTrue(refused["hooktarget:sum8"]?.contains("already patched by something else (a jmp: another hooking tool)") ?? false, "\(refused)")
        XCTAssertEqual(try target.send("fib 10"), "55", "the uprobe still fires and returns")
        XCTAssertEqual(try target.send("add 1 2"), "3")
        session.detach()
        XCTAssertEqual(session.calls["hooktarget:add"], 1)
        print("foreign patches: " + refused.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; "))
        _ = hk_vm_read(target.pid, fib, &fibEntry, 1)
        XCTAssertEqual(fibEntry, 0xcc, "the uprobe's int3 was left alone")
        var now5 = [UInt8](repeating: 0, count: 5)
        _ = now5.withUnsafeMutableBytes { hk_vm_read(target.pid, sum8, $0.baseAddress, 5) }
        XCTAssertEqual(now5, jmp, "the foreign jmp was left alone")
        XCTAssertEqual(original.withUnsafeBytes { pwrite(mem, $0.baseAddress, 5, off_t(sum8)) }, 5)
        XCTAssertEqual(try target.send("sum8"), "204")
    }
}
