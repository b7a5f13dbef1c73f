import Foundation
import TestSupport
import XCTest

/// `--if` filters, evaluated inside the process: what hookit reports is exactly the calls the
/// target itself counts as matching, whether the filter is decided at the call's entry (its
/// arguments, a string argument as a literal or on the heap, NULL) or at its exit (`ret`).
final class FilterTests: XCTestCase {
    /// `mix N`'s own tallies: "mixed SUM big B etc E both X hosts H retbig R either Y".
    private func tallies(_ reply: String) throws -> [String: Int] {
        let w = reply.split(separator: " ").map(String.init)
        guard w.first == "mixed", w.count == 14 else { throw TestError("unexpected reply to mix: \(reply)") }
        var t: [String: Int] = [:]
        for i in stride(from: 2, to: w.count, by: 2) { t[w[i]] = Int(w[i + 1]) }
        return t
    }

    private func session(_ hooks: [String], _ command: String, then more: [String] = []) throws -> (reply: String, events: [[String: Any]], target: TargetProcess) {
        let target = try TargetProcess("filtertarget")
        let h = Background(["attach", "\(target.pid)", "--json"] + hooks)
        try attached(h, target)
        let reply = try target.send(command, timeout: 30)
        for m in more { _ = try target.send(m, timeout: 30) }
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(800).description)
        return (reply, events(out), target)
    }

    private func stats(_ events: [[String: Any]], _ function: String) -> [String: Any]? {
        events.first { $0["event"] as? String == "stats" && $0["function"] as? String == function }
    }

    func testTraceIfOnIntegersAndStringsTracesExactlyTheCallsTheTargetMatched() throws {
        let (reply, events, target) = try session([
            "--trace", "filtertarget:weigh", "--if", #"arg0 >= 1000 && str(arg1) ~ "/etc/*""#, "--sig", "weigh(long, str) -> long",
            "--count", "filtertarget:weigh", "--if", #"str(arg1) == "/etc/hosts""#,
        ], "mix 1000")
        let t = try tallies(reply)
        let calls = events.filter { $0["event"] as? String == "call" }
        XCTAssertGreaterThan(t["both"]!, 0)
        XCTAssertEqual(calls.count, t["both"], "one traced call per call the target found big and under /etc/")
        for c in calls {
            let args = try XCTUnwrap(c["args"] as? [Any])
            XCTAssertGreaterThanOrEqual(args[0] as? Int ?? -1, 1000)
            XCTAssertTrue((args[1] as? String ?? "").hasPrefix("/etc/"), "\(args)")
        }
        XCTAssertTrue(calls.contains { ($0["args"] as? [Any])?[1] as? String == "/etc/on-the-heap" }, "a heap string is read too")
        XCTAssertEqual(stats(events, "filtertarget:weigh")?["calls"] as? Int, t["hosts"], "counted: the calls with the path /etc/hosts")
        XCTAssertEqual(try target.send("mix 10").split(separator: " ").first, "mixed", "the target runs on after detach")
    }

    /// `ret` and `ns` are known at the exit: a traced call that passes is recorded then, its
    /// entry (arguments, strings) with its end; a count decided at exit counts there.
    func testIfOnTheReturnValueAndDurationDecidedAtExitAndCombinedTestsAtEntry() throws {
        let (reply, events, _) = try session([
            "--trace", "filtertarget:weigh", "--if", "ret > 1500", "--sig", "weigh(long, str) -> long",
            "--count", "filtertarget:weigh", "--if", #"(arg0 < 100 || str(arg1) == "/tmp/x") && !(arg1 == 0)"#,
            "--count", "filtertarget:pick", "--if", "ns < 10s", "--count", "filtertarget:doit", "--if", "ns > 10s",
        ], "mix 1000", then: ["keys 100 7", "doit 5"])
        let t = try tallies(reply)
        let calls = events.filter { $0["event"] as? String == "call" }
        XCTAssertEqual(calls.count, t["retbig"])
        for c in calls {
            let args = try XCTUnwrap(c["args"] as? [Any]), ret = c["ret"] as? Int ?? 0
            XCTAssertGreaterThan(ret, 1500)
            XCTAssertEqual(ret, (args[0] as? Int ?? -1) + ((args[1] as? String)?.utf8.count ?? 0), "the entry's arguments and string: \(c)")
            XCTAssertNotNil(c["ns"] as? Int, "the call's duration, from its entry time")
        }
        XCTAssertEqual(stats(events, "filtertarget:weigh")?["calls"] as? Int, t["either"])
        XCTAssertEqual(stats(events, "filtertarget:pick")?["calls"] as? Int, 100, "every call is shorter than 10 s")
        XCTAssertEqual(stats(events, "filtertarget:doit")?["calls"] as? Int, 0, "none is longer")
    }

    func testOverrideIfSkipsOnlyTheMatchingCalls() throws {
        let (reply, events, target) = try session(["--override", "filtertarget:doit=-1", "--if", "arg0 == 7 || arg0 == 2"], "doit 10")
        XCTAssertEqual(reply, "1 2 -1 4 5 6 7 -1 9 10", "doit(2) and doit(7) skipped and returned -1, the others ran")
        let o = try XCTUnwrap(events.first { $0["event"] as? String == "override" })
        XCTAssertEqual(o["injected"] as? Int, 2)
        XCTAssertEqual(try target.send("doit 10"), "1 2 3 4 5 6 7 8 9 10", "the override is gone after detach")
    }

    func testAFilterThatCannotBeParsedNamesTheColumnAndAttachesNothing() throws {
        let target = try TargetProcess("filtertarget")
        let r = runProgram([Repo.hookit, "attach", "\(target.pid)", "--trace", "filtertarget:weigh", "--if", "arg0 >= 10 && arg1 =< 3"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("column 20: expected a comparison"), r.stderr)
        XCTAssertTrue(try codeEqualsFile(target, "weigh", in: "filtertarget"), "nothing was patched")
        let bad = runProgram([Repo.hookit, "attach", "\(target.pid)", "--override", "filtertarget:doit=1", "--if", "ret == 1"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("cannot test ret or ns") || bad.stderr.contains("not ret or ns"), bad.stderr)
        XCTAssertEqual(try target.send("doit 3"), "1 2 3")
    }
}
