import Foundation
import Glibc
import TestSupport
import XCTest

/// hookit's exports read by the engines they are for: Prometheus (through node_exporter's
/// textfile collector), OpenTelemetry's protobuf schema, Perfetto's track names; each checked
/// against what the target itself did.
final class ExportTests: XCTestCase {
    /// Debian's prometheus scrapes Debian's node exporter, whose textfile collector reads the
    /// directory hookit writes --prometheus into; the query API answers with the target's own
    /// count of its calls, and the histogram holds each of them.
    func testPrometheusScrapesHookitsCountsThroughNodeExporter() throws {
        for tool in ["/usr/bin/prometheus", "/usr/bin/prometheus-node-exporter", "/usr/bin/curl"] where access(tool, X_OK) != 0 {
            XCTFail("\(tool) is missing: scripts/install-deps.sh installs it"); return
        }
        let dir = try TempDir()
        let (exporterPort, prometheusPort) = (try freeLoopbackPort(), try freeLoopbackPort())
        try """
        global:
          scrape_interval: 1s
        scrape_configs:
          - job_name: hookit
            static_configs:
              - targets: ['127.0.0.1:\(exporterPort)']
        """.write(toFile: dir.path + "/prometheus.yml", atomically: true, encoding: .utf8)
        mkdir(dir.path + "/textfile", 0o755)
        let exporter = try Daemon(["/usr/bin/prometheus-node-exporter", "--web.listen-address=127.0.0.1:\(exporterPort)",
                                   "--collector.disable-defaults", "--collector.textfile",
                                   "--collector.textfile.directory=\(dir.path)/textfile"], log: dir.path + "/exporter.log")
        defer { exporter.stop() }
        let prometheus = try Daemon(["/usr/bin/prometheus", "--config.file=\(dir.path)/prometheus.yml",
                                     "--storage.tsdb.path=\(dir.path)/data", "--web.listen-address=127.0.0.1:\(prometheusPort)"],
                                    log: dir.path + "/prometheus.log")
        defer { prometheus.stop() }

        let target = try TargetProcess("hooktarget")
        let before = try XCTUnwrap(Int(try target.send("calls")))
        let h = Background(["attach", "\(target.pid)", "--count", "hooktarget:add", "--count", "hooktarget:fib", "--hist",
                            "--prometheus", dir.path + "/textfile/hookit.prom", "--interval", "0.5"])
        try attached(h, target)
        XCTAssertEqual(try target.send("spin 4 5000", timeout: 60), "spun 20000 50010000")
        for i in 1...7 { XCTAssertEqual(try target.send("add \(i) 1"), "\(i + 1)") }
        XCTAssertEqual(try target.send("fib 10"), "55")
        usleep(600_000)                                  // one interval's file while attached
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        let calls = try XCTUnwrap(Int(try target.send("calls"))) - before
        XCTAssertEqual(calls, 20_007)

        let file = try String(contentsOfFile: dir.path + "/textfile/hookit.prom", encoding: .utf8)
        XCTAssertTrue(file.contains("# TYPE hookit_calls_total counter"), file)
        XCTAssertTrue(file.contains("# TYPE hookit_call_duration_seconds histogram"), file)
        XCTAssertTrue(file.contains("# HELP hookit_misses_total "), file)

        let add = "{function=\"hooktarget:add\",pid=\"\(target.pid)\"}"
        let fib = "{function=\"hooktarget:fib\",pid=\"\(target.pid)\"}"
        // Scraped every second: wait (bounded) until the final file has been scraped.
        let deadline = now() + 45
        var seen: Double?
        while now() < deadline {
            seen = try query(prometheusPort, "hookit_calls_total\(add)")
            if seen == Double(calls) { break }
            usleep(500_000)
        }
        XCTAssertEqual(seen, Double(calls), "hookit_calls_total for add, as Prometheus has it\n\(exporter.logTail)\n\(prometheus.logTail)")
        XCTAssertEqual(try query(prometheusPort, "hookit_call_duration_seconds_count\(add)"), Double(calls))
        XCTAssertEqual(try query(prometheusPort, "hookit_call_duration_seconds_bucket{function=\"hooktarget:add\",le=\"+Inf\"}"), Double(calls))
        XCTAssertEqual(try query(prometheusPort, "hookit_calls_total\(fib)"), 177, "fib(10) makes 177 calls")
        XCTAssertEqual(try query(prometheusPort, "hookit_call_duration_seconds_count\(fib)"), 177)
        XCTAssertEqual(try query(prometheusPort, "hookit_misses_total\(add)"), 0)
        // Buckets are cumulative and end at the count; the sum is positive and below calls × 1 s.
        let sum = try XCTUnwrap(try query(prometheusPort, "hookit_call_duration_seconds_sum\(add)"))
        XCTAssertGreaterThan(sum, 0)
        XCTAssertLessThan(sum, Double(calls))
        let le1ms = try XCTUnwrap(try query(prometheusPort, "hookit_call_duration_seconds_bucket{function=\"hooktarget:add\",le=\"0.001048576\"}"))
        XCTAssertLessThanOrEqual(le1ms, Double(calls))
        XCTAssertGreaterThan(le1ms, Double(calls) * 0.9, "most adds take well under a millisecond")
    }

    /// The file is replaced whole by rename: a symlink planted at its name is replaced, never
    /// written through, and no temp file is left beside it.
    func testPrometheusFileNeverWritesThroughAPlantedSymlink() throws {
        let dir = try TempDir()
        let victim = dir.path + "/victim"
        try "keep me\n".write(toFile: victim, atomically: false, encoding: .utf8)
        XCTAssertEqual(symlink(victim, dir.path + "/hookit.prom"), 0)
        let target = try TargetProcess("hooktarget")
        let h = Background(["attach", "\(target.pid)", "--count", "hooktarget:add", "--prometheus", dir.path + "/hookit.prom"])
        try attached(h, target)
        XCTAssertEqual(try target.send("add 1 2"), "3")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "keep me\n")
        var st = stat()
        XCTAssertEqual(lstat(dir.path + "/hookit.prom", &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFREG, "the symlink was replaced by the file")
        let text = try String(contentsOfFile: dir.path + "/hookit.prom", encoding: .utf8)
        XCTAssertTrue(text.contains("hookit_calls_total{pid=\"\(target.pid)\",process=\"hooktarget\",function=\"hooktarget:add\"} 1"), text)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["hookit.prom", "victim"])
    }

    /// Every --otlp line parses as an ExportTraceServiceRequest with opentelemetry-proto; the
    /// spans are the target's calls, recursive fib calls nested under their callers with one
    /// trace id per outermost call, times inside the test's own clock window.
    func testOTLPLinesParseAsExportTraceServiceRequestsWithNestedSpans() throws {
        let python = Repo.root + "/.venv-test/bin/python"
        guard access(python, X_OK) == 0 else { XCTFail("\(python) is missing: scripts/install-deps.sh makes it"); return }
        let dir = try TempDir()
        let file = dir.path + "/spans.jsonl"
        let target = try TargetProcess("hooktarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--trace", "hooktarget:fib", "--sig", "fib(long) -> long",
                            "--trace", "hooktarget:add", "--sig", "add(long, long) -> long", "--otlp", file, "--service", "hookit-test"])
        try attached(h, target)
        let t0 = Date().timeIntervalSince1970
        XCTAssertEqual(try target.send("fib 6"), "8")
        XCTAssertEqual(try target.send("add 2 3"), "5")
        XCTAssertEqual(try target.send("fib 3"), "2")
        XCTAssertEqual(try target.send("spin 2 50"), "spun 100 2550")
        let t1 = Date().timeIntervalSince1970
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        let detached = try XCTUnwrap(events(out).last { $0["event"] as? String == "detached" })
        XCTAssertEqual(detached["dropped"] as? Int, 0)

        let parsed = runProgram([python, Repo.root + "/testtargets/otlp_parse.py", file])
        XCTAssertEqual(parsed.status, 0, "opentelemetry-proto refused a line: \(parsed.stderr)")
        let result = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(parsed.output.utf8)) as? [String: Any])
        XCTAssertGreaterThan(result["lines"] as? Int ?? 0, 0)
        for r in try XCTUnwrap(result["resources"] as? [[String: Any]]) {
            XCTAssertEqual(r["service.name"] as? String, "hookit-test")
            XCTAssertEqual(r["process.pid"] as? Int, Int(target.pid))
            XCTAssertEqual(r["process.executable.name"] as? String, "hooktarget")
        }
        let spans = try XCTUnwrap(result["spans"] as? [[String: Any]])
        let fibs = spans.filter { $0["name"] as? String == "hooktarget:fib" }
        let adds = spans.filter { $0["name"] as? String == "hooktarget:add" }
        XCTAssertEqual(fibs.count, 25 + 5, "fib(6) makes 25 calls, fib(3) 5")
        XCTAssertEqual(adds.count, 101)
        XCTAssertEqual(spans.count, fibs.count + adds.count)

        let byID = Dictionary(spans.map { ($0["span_id"] as! String, $0) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(byID.count, spans.count, "span ids are unique")
        func attr(_ s: [String: Any], _ k: String) -> Int? { (s["attributes"] as? [String: Any])?[k] as? Int }
        func fibValue(_ n: Int) -> Int { n < 2 ? n : fibValue(n - 1) + fibValue(n - 2) }
        for s in spans {
            let start = try XCTUnwrap(s["start"] as? Int), end = try XCTUnwrap(s["end"] as? Int)
            XCTAssertLessThanOrEqual(start, end)
            XCTAssertGreaterThan(Double(start) / 1e9, t0 - 0.5, "start in Unix time, after the first command")
            XCTAssertLessThan(Double(end) / 1e9, t1 + 0.5)
            XCTAssertEqual((s["trace_id"] as? String)?.count, 32)
            XCTAssertEqual(s["kind"] as? Int, 1)
            XCTAssertEqual((s["attributes"] as? [String: Any])?["hookit.ended"] as? String, "returned")
            XCTAssertNotNil(attr(s, "thread.id"))
        }
        // fib: each call has its callee calls as children, in the same trace.
        var roots: [Int] = []
        for s in fibs {
            let n = try XCTUnwrap(attr(s, "hookit.arg0"))
            XCTAssertEqual(attr(s, "hookit.ret"), fibValue(n))
            let children = fibs.filter { $0["parent"] as? String == s["span_id"] as? String }
            XCTAssertEqual(children.compactMap { attr($0, "hookit.arg0") }.sorted(), n < 2 ? [] : [n - 2, n - 1], "fib(\(n))'s children")
            for c in children {
                XCTAssertEqual(c["trace_id"] as? String, s["trace_id"] as? String)
                XCTAssertGreaterThanOrEqual(c["start"] as! Int, s["start"] as! Int)
                XCTAssertLessThanOrEqual(c["end"] as! Int, s["end"] as! Int)
            }
            if (s["parent"] as? String ?? "").isEmpty { roots.append(n) }
            else { XCTAssertNotNil(byID[s["parent"] as! String], "the parent span is in the file") }
        }
        XCTAssertEqual(roots.sorted(), [3, 6], "one root per fib command")
        XCTAssertEqual(Set(fibs.map { $0["trace_id"] as! String }).count, 2, "one trace id per outermost call")
        // add: never nested; the spin threads' calls carry their own thread ids.
        XCTAssertTrue(adds.allSatisfy { ($0["parent"] as? String ?? "").isEmpty })
        XCTAssertEqual(Set(adds.map { $0["trace_id"] as! String }).count, adds.count)
        let threads = Set(adds.compactMap { attr($0, "thread.id") })
        XCTAssertTrue(threads.contains(Int(target.pid)))
        XCTAssertEqual(threads.count, 3, "the main thread and the two spin threads")
        XCTAssertEqual(adds.filter { attr($0, "hookit.arg0") == 2 && attr($0, "hookit.arg1") == 3 }.first.flatMap { attr($0, "hookit.ret") }, 5)
    }

    /// The Chrome trace names its tracks: the process as "hooktarget [PID]", every thread that
    /// made a traced call with its own name and id.
    func testChromeTraceNamesProcessAndThreadTracks() throws {
        let dir = try TempDir()
        let file = dir.path + "/trace.json"
        let target = try TargetProcess("hooktarget")
        let h = Background(["attach", "\(target.pid)", "--trace", "hooktarget:add", "--output", file])
        try attached(h, target)
        XCTAssertEqual(try target.send("spin 3 10"), "spun 30 165")
        XCTAssertEqual(try target.send("add 1 1"), "2")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
        let trace = try XCTUnwrap(json["traceEvents"] as? [[String: Any]])
        let meta = trace.filter { $0["ph"] as? String == "M" }
        let process = try XCTUnwrap(meta.first { $0["name"] as? String == "process_name" })
        XCTAssertEqual((process["args"] as? [String: Any])?["name"] as? String, "hooktarget [\(target.pid)]")
        let calls = trace.filter { $0["ph"] as? String == "X" }
        XCTAssertEqual(calls.count, 31)
        let tids = Set(calls.compactMap { $0["tid"] as? Int })
        XCTAssertEqual(tids.count, 4)
        let named = Dictionary(meta.filter { $0["name"] as? String == "thread_name" }.map { ($0["tid"] as! Int, ($0["args"] as! [String: Any])["name"] as! String) },
                               uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(Set(named.keys), tids, "every thread with a call has exactly one name")
        XCTAssertEqual(named[Int(target.pid)], "hooktarget [\(target.pid)]")
        for (tid, name) in named { XCTAssertTrue(name.hasSuffix("[\(tid)]"), name) }
    }

    // MARK: - helpers

    /// The value of a one-series instant query, nil while Prometheus has none.
    private func query(_ port: UInt16, _ promql: String) throws -> Double? {
        let r = runProgram(["/usr/bin/curl", "-s", "--max-time", "3", "-G", "http://127.0.0.1:\(port)/api/v1/query", "--data-urlencode", "query=\(promql)"])
        guard r.status == 0, let obj = try? JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any],
              let data = obj["data"] as? [String: Any], let result = data["result"] as? [[String: Any]] else { return nil }
        guard result.count <= 1 else { throw TestError("\(promql): \(result.count) series, expected one") }
        guard let value = result.first?["value"] as? [Any], let text = value.last as? String else { return nil }
        return Double(text)
    }
}

/// A port nothing listens on now (the kernel's pick for port 0), for a daemon to bind next.
func freeLoopbackPort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else { throw TestError("no free loopback port: \(String(cString: strerror(errno)))") }
    return UInt16(bigEndian: addr.sin_port)
}

/// A server the test starts and always stops (SIGTERM, then SIGKILL after 5 s), its output in
/// a log file so that a full pipe never stalls it.
final class Daemon {
    let pid: pid_t
    let log: String
    private var stopped = false

    init(_ argv: [String], log: String) throws {
        self.log = log
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cargv = argv.map { strdup($0) } + [nil]
        defer { cargv.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, argv[0], &actions, nil, cargv, environ)
        guard rc == 0 else { throw TestError("spawn \(argv[0]): \(String(cString: strerror(rc)))") }
        pid = child
    }

    var logTail: String { ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").suffix(10).joined(separator: "\n") }

    func stop() {
        if stopped { return }
        stopped = true
        kill(pid, SIGTERM)
        let deadline = now() + 5
        var status: Int32 = 0
        while now() < deadline {
            if waitpid(pid, &status, WNOHANG) == pid { return }
            usleep(20_000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
    }

    deinit { stop() }
}

/// A directory of the test's own under /tmp, removed with everything in it.
final class TempDir {
    let path: String

    init() throws {
        var template = Array("/tmp/hookit-test-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw TestError("mkdtemp: \(String(cString: strerror(errno)))") }
        path = String(cString: p)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
