import Foundation
import Glibc
import TestSupport
import XCTest

/// redis-server, as Debian ships it (jemalloc, libssl, stripped with .dynsym), hooked while
/// redis-benchmark loads it: the service sees nothing but a little latency.
final class RedisTests: XCTestCase {
    private let server = "/usr/bin/redis-server", cli = "/usr/bin/redis-cli", bench = "/usr/bin/redis-benchmark"

    private func redis(_ port: Int, _ args: String...) -> String {
        runProgram([cli, "-h", "127.0.0.1", "-p", "\(port)"] + args).output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func info(_ port: Int, _ field: String) -> Int {
        let text = redis(port, "INFO", "stats")
        let line = text.split(whereSeparator: \.isNewline).first { $0.hasPrefix(field + ":") } ?? ""
        return Int(line.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "") ?? -1
    }

    /// A digest of the keys the test owns: equal before and after means the data is the same.
    private func digest(_ port: Int) -> String {
        redis(port, "EVAL", "local t={} for i=0,999 do t[#t+1]=redis.call('GET','real:'..i) end return redis.sha1hex(table.concat(t,','))", "0")
    }

    func testRedisUnderBenchmarkLoadWithMallocFreeReadWriteCounted() throws {
        try require(server, cli, bench)
        Repo.buildTargets()
        let dir = TempDir("redis")
        let port = freePort()
        let daemon = try Daemon([server, "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", dir.path, "--logfile", dir.file("redis.log"), "--daemonize", "no"])
        XCTAssertTrue(waitUntil(10) { redis(port, "PING") == "PONG" }, "redis-server answers")
        // Data the benchmark does not touch: 1,000 keys written before the hooks.
        var mset = ["MSET"]
        for i in 0..<1000 { mset += ["real:\(i)", "value-\(i)-\(i * 7919 % 1000)"] }
        XCTAssertEqual(runProgram([cli, "-h", "127.0.0.1", "-p", "\(port)"] + mset).output.trimmingCharacters(in: .whitespacesAndNewlines), "OK")
        let before = digest(port)

        // And every write traced: far more events than hookit prints while the benchmark runs,
        // so many are dropped — each event that arrives must be whole, and none silently lost.
        let args = ["--count", "malloc", "--count", "free", "--count", "libc.so.6:read", "--count", "libc.so.6:write",
                    "--trace", "libc.so.6:write"]
        let session = try HookitSession(daemon.pid, args)
        let attached = try XCTUnwrap(session.event("attached"))
        let commandsBefore = info(port, "total_commands_processed")

        // Several seconds of load: 5 commands × 20,000 requests, 20 clients, twice.
        var requests = 0
        let started = now()
        for _ in 0..<2 {
            // A benchmark whose server died would retry for ever: bounded.
            let r = runProgram(["/usr/bin/timeout", "-k", "5", "120", bench, "-h", "127.0.0.1", "-p", "\(port)", "-n", "20000", "-c", "20",
                                "-t", "set,get,incr,lpush,lpop", "-q", "--csv"])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertFalse((r.output + r.stderr).lowercased().contains("error"), r.output + r.stderr)
            XCTAssertEqual(r.output.split(separator: "\n").count, 6, "a header and five tests: \(r.output)")
            requests += 5 * 20000
        }
        let loadSeconds = now() - started
        let commands = info(port, "total_commands_processed") - commandsBefore - 1
        XCTAssertTrue(daemon.isAlive)
        let events = session.detach()
        let calls = session.calls
        let detached = try XCTUnwrap(events.last)

        XCTAssertEqual(detached["event"] as? String, "detached")
        XCTAssertEqual(detached["restored"] as? Int, attached["functions"] as? Int)
        XCTAssertEqual((detached["left_mapped"] as? [Any])?.count, 0)
        XCTAssertGreaterThanOrEqual(commands, requests, "redis processed every request")
        let reads = calls["libc.so.6:read"] ?? 0, writes = calls["libc.so.6:write"] ?? 0
        let mallocs = calls.filter { $0.key.hasSuffix(":malloc") }.values.reduce(0, +)
        let frees = calls.filter { $0.key.hasSuffix(":free") }.values.reduce(0, +)
        print("redis: \(requests) requests (\(commands) commands) in \(String(format: "%.1f", loadSeconds)) s; "
              + "read \(reads), write \(writes), malloc \(mallocs), free \(frees); per module: \(calls.sorted { $0.key < $1.key }); "
              + "attach stopped \(attached["stopped_ns"] ?? 0) ns, \(attached["functions"] ?? 0) functions")
        // Without pipelining every request is one read of the socket and its reply one write.
        XCTAssertGreaterThanOrEqual(reads, commands * 9 / 10)
        XCTAssertLessThanOrEqual(reads, commands * 3 + 1000)
        XCTAssertGreaterThanOrEqual(writes, commands * 9 / 10)
        XCTAssertLessThanOrEqual(writes, commands * 3 + 1000)
        XCTAssertGreaterThan(mallocs, requests / 10, "jemalloc's malloc runs for the requests")
        XCTAssertGreaterThan(frees, requests / 10)
        // The trace: whole events (fd, buffer, size; the return is what was written), and
        // traced + dropped = every write the count saw.
        let traced = events.filter { $0["event"] as? String == "call" }
        XCTAssertGreaterThan(traced.count, 0)
        for c in traced.prefix(5000) {
            XCTAssertEqual(c["function"] as? String, "libc.so.6:write")
            let a = try XCTUnwrap(c["args"] as? [Int])
            XCTAssertEqual(a.count, 3)
            XCTAssertGreaterThan(a[0], 2, "a client socket, not stdio")
            let ret = try XCTUnwrap(c["ret"] as? Int)
            XCTAssertTrue(ret == a[2] || (ret >= -1 && ret < a[2]), "write returns at most its size: \(c)")
        }
        // (A write still in flight when its image goes is counted at entry but never traced.)
        let seen = (detached["traced"] as? Int ?? 0) + (detached["dropped"] as? Int ?? 0)
        XCTAssertTrue(seen <= writes && seen >= writes - 5, "every write is a traced event or a counted drop: \(seen) of \(writes)")

        // The service is as it was: the same data, still answering, no error in its log.
        XCTAssertEqual(digest(port), before, "the same data afterwards")
        XCTAssertEqual(redis(port, "GET", "real:7"), "value-7-\(7 * 7919 % 1000)")
        XCTAssertEqual(redis(port, "PING"), "PONG")
        let log = (try? String(contentsOfFile: dir.file("redis.log"), encoding: .utf8)) ?? ""
        XCTAssertFalse(log.contains("# ") && log.lowercased().contains("crash"), log)
        for module in ["libc.so.6", "libjemalloc.so.2"] {
            XCTAssertNoThrow(try moduleCodeEqualsFile(pid: daemon.pid, module: module), "\(module) is as its file after detach")
        }
    }

    /// Every function of libc in a loaded redis-server: the refusals are printed per entry
    /// pattern with their reasons, and the benchmark still gets only right answers.
    func testAllOfLibcInRedisUnderLoad() throws {
        try require(server, cli, bench)
        Repo.buildTargets()
        let dir = TempDir("redis-libc")
        let port = freePort()
        let daemon = try Daemon([server, "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", dir.path, "--logfile", dir.file("redis.log"), "--daemonize", "no"])
        XCTAssertTrue(waitUntil(10) { redis(port, "PING") == "PONG" })
        let symbols = listSymbols(daemon.pid, "libc.so.6:*")
        // --no-time: plain entry counts (a timed count calls the original from its image).
        let session = try HookitSession(daemon.pid, ["--count", "libc.so.6:*", "--no-time"])
        let r = runProgram(["/usr/bin/timeout", "-k", "5", "120", bench, "-h", "127.0.0.1", "-p", "\(port)", "-n", "20000", "-c", "20", "-t", "set,get,lpush,lpop", "-q", "--csv"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse((r.output + r.stderr).lowercased().contains("error"), r.output + r.stderr)
        XCTAssertEqual(redis(port, "SET", "k", "v"), "OK")
        XCTAssertEqual(redis(port, "GET", "k"), "v")
        session.detach()
        let attached = try XCTUnwrap(session.event("attached"))
        XCTAssertGreaterThan(attached["functions"] as? Int ?? 0, 1500)
        XCTAssertEqual(session.event("detached")?["restored"] as? Int, attached["functions"] as? Int)
        let report = refusalReport("redis-server", pid: daemon.pid, pattern: "libc.so.6:*", session: session, symbols: symbols)
        XCTAssertGreaterThan(report[.ripRelative]?.hooked ?? 0, 0, "RIP-relative entries are relocated")
        XCTAssertGreaterThan(report[.shortBranch]?.hooked ?? 0, 0, "short jmp/jcc entries are widened")
        // Debian's glibc is not built with -fcf-protection: endbr64 entries are covered by hooktarget-ibt.
        XCTAssertGreaterThan(session.calls.values.reduce(0, +), 80000)
        XCTAssertNoThrow(try moduleCodeEqualsFile(pid: daemon.pid, module: "libc.so.6"))
        XCTAssertEqual(redis(port, "PING"), "PONG")
    }
}
