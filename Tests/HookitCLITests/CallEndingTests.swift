import Foundation
import TestSupport
import XCTest

/// Every traced call appears, with how it ended (issue 17, part 1): calls left by longjmp or an
/// exception, a thread's calls ended by pthread_exit, and calls the process exited in. The
/// targets (endings, cxxtarget) are built -O2 and call the traced functions directly; each
/// counts its own calls, which the trace and the counts must match exactly.
final class CallEndingTests: XCTestCase {
    private struct Run {
        let status: Int32
        let said: [String]           // the target's own lines
        let calls: [[String: Any]]
        let counted: [String: Int]   // --count's final calls per function
        let timed: [String: Int]     // of those, the calls in its histogram (timed)
        let exited: [String: Any]
        let raw: String
    }

    private func run(_ target: String, _ hooks: [String], stdin: String) throws -> Run {
        let r = runProgram([Repo.hookit, "run", "--json", "--hist"] + hooks + ["--", Repo.target(target)], stdin: stdin)
        let all = events(r.output)
        var counted: [String: Int] = [:], timed: [String: Int] = [:]
        for s in all where s["event"] as? String == "stats" && s["final"] as? Bool == true {
            counted[s["function"] as? String ?? ""] = s["calls"] as? Int
            timed[s["function"] as? String ?? ""] = (s["hist"] as? [[Int]] ?? []).reduce(0) { $0 + $1[2] }
        }
        let exited = try XCTUnwrap(all.last { $0["event"] as? String == "exited" }, r.output + r.stderr)
        let schema = try EventSchema(markdown: String(contentsOfFile: Repo.root + "/docs/events.md", encoding: .utf8))
        for l in r.output.split(separator: "\n") where l.hasPrefix("{") { XCTAssertEqual(schema.check(line: String(l)), [], String(l)) }
        return Run(status: r.status, said: r.output.split(separator: "\n").filter { !$0.hasPrefix("{") }.map(String.init),
                   calls: all.filter { $0["event"] as? String == "call" }, counted: counted, timed: timed, exited: exited, raw: r.output + r.stderr)
    }

    private func calls(_ r: Run, _ function: String) -> [[String: Any]] { r.calls.filter { $0["function"] as? String == function } }

    /// Nothing lost: every call counted at its entry is traced or counted as dropped, and timed
    /// to where it ended, returned or not.
    private func assertNothingLost(_ r: Run, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.timed, r.counted, "every counted call is timed: \(r.raw)", file: file, line: line)
        let counted = r.counted.values.reduce(0, +)
        XCTAssertGreaterThan(counted, 0, r.raw, file: file, line: line)
        XCTAssertEqual((r.exited["traced"] as? Int ?? -1) + (r.exited["dropped"] as? Int ?? 0), counted, "traced + dropped = counted: \(r.raw)",
                       file: file, line: line)
        XCTAssertEqual(r.exited["traced"] as? Int, r.calls.count, r.raw, file: file, line: line)
    }

    private func end(_ c: [String: Any]) -> Int { (c["ts"] as? Int ?? 0) + (c["ns"] as? Int ?? 0) }
    private func arg0(_ c: [String: Any]) -> Int? { (c["args"] as? [Any])?.first as? Int }
    /// Ends computed from one time each: equal up to the nanosecond rounding of ts and ns.
    private func sameEnd(_ a: [String: Any], _ b: [String: Any]) -> Bool { abs(end(a) - end(b)) <= 2 }

    func testLongjmpOutOfTwoNestedTracedFunctionsEndsBothWhereItJumped() throws {
        let hooks = ["endings:jump_*", "endings:plain"].flatMap { ["--trace", $0, "--count", $0] }
        let r = try run("endings", hooks, stdin: "jump 3\nret 2\ncalls\n")
        XCTAssertEqual(r.status, 0, r.raw)
        XCTAssertEqual(Array(r.said.dropFirst()), ["jumped 3", "3", "3 3 0 0 2"], r.raw)
        let outer = calls(r, "endings:jump_outer"), inner = calls(r, "endings:jump_inner")
        XCTAssertEqual(outer.count, 3, r.raw)
        XCTAssertEqual(inner.count, 3, r.raw)
        for c in outer + inner {
            XCTAssertEqual(c["ended"] as? String, "unwound", "\(c)")
            XCTAssertTrue(c["ret"] is NSNull, "a call that did not return has no value: \(c)")
            XCTAssertNotNil(c["ns"] as? Int, "its time runs to the longjmp: \(c)")
        }
        XCTAssertEqual(outer.compactMap(arg0), [0, 1, 2], "arguments as recorded at the entry")
        for (o, i) in zip(outer, inner) {
            XCTAssertLessThanOrEqual(o["ts"] as? Int ?? 0, i["ts"] as? Int ?? 0, "inner begins inside outer")
            XCTAssertTrue(sameEnd(o, i), "both end where longjmp ran: \(o) \(i)")
        }
        XCTAssertEqual(calls(r, "endings:plain").map { $0["ended"] as? String }, ["returned", "returned"])
        XCTAssertEqual(calls(r, "endings:plain").compactMap { $0["ret"] as? Int }, [0, 3])
        XCTAssertEqual(r.counted["endings:jump_outer"], 3)
        XCTAssertEqual(r.counted["endings:jump_inner"], 3)
        assertNothingLost(r)
    }

    func testCxxExceptionThroughThreeTracedFramesEndsThemAtTheCatch() throws {
        let hooks = ["cxxtarget:relay*", "cxxtarget:thrower"].flatMap { ["--trace", $0, "--count", $0] }
        let r = try run("cxxtarget", hooks, stdin: "relay2 -3\nrelay2 2\nquit\n")
        XCTAssertEqual(r.status, 0, r.raw)
        XCTAssertEqual(Array(r.said.dropFirst()), ["caught negative -3", "6", "bye"], r.raw)
        let unwound = r.calls.filter { $0["ended"] as? String == "unwound" }
        XCTAssertEqual(unwound.compactMap { $0["function"] as? String }, ["cxxtarget:thrower", "cxxtarget:relay", "cxxtarget:relay2"],
                       "innermost first, as the unwinding passed: \(r.raw)")
        XCTAssertTrue(unwound.allSatisfy { sameEnd($0, unwound[0]) }, "all three end at the catch: \(unwound)")
        let returned = r.calls.filter { $0["ended"] as? String == "returned" }
        XCTAssertEqual(returned.compactMap { $0["ret"] as? Int }, [4, 5, 6], r.raw)
        XCTAssertEqual(r.counted.values.reduce(0, +), 6)
        assertNothingLost(r)
    }

    func testPthreadExitInsideATracedFunctionEndsTheThreadsCalls() throws {
        let hooks = ["endings:thread_body", "endings:leave_thread", "endings:plain"].flatMap { ["--trace", $0, "--count", $0] }
        let r = try run("endings", hooks, stdin: "thread 5\nret 1\ncalls\n")
        XCTAssertEqual(r.status, 0, r.raw)
        XCTAssertEqual(Array(r.said.dropFirst()), ["joined 6", "0", "0 0 1 1 1"], r.raw)
        let body = try XCTUnwrap(calls(r, "endings:thread_body").first, r.raw)
        let leave = try XCTUnwrap(calls(r, "endings:leave_thread").first, r.raw)
        XCTAssertEqual(body["ended"] as? String, "thread_exit", r.raw)
        XCTAssertEqual(leave["ended"] as? String, "thread_exit", r.raw)
        XCTAssertEqual(arg0(leave), 6)
        XCTAssertEqual(body["tid"] as? Int, leave["tid"] as? Int)
        XCTAssertNotEqual(body["tid"] as? Int, calls(r, "endings:plain").first?["tid"] as? Int, "a thread of its own")
        XCTAssertTrue(sameEnd(body, leave), "both end at pthread_exit")
        assertNothingLost(r)
    }

    func testExitAndUnderscoreExitInsideATracedFunctionEndTheCallAsTheProcessExit() throws {
        for (command, function, code) in [("exit", "endings:exit_in", 3), ("_exit", "endings:quick_in", 4)] {
            let hooks = [function, "endings:plain"].flatMap { ["--trace", $0, "--count", $0] }
            let r = try run("endings", hooks, stdin: "ret 2\n\(command) \(code)\n")
            XCTAssertEqual(r.status, Int32(code), r.raw)
            XCTAssertEqual(r.exited["status"] as? Int, code)
            let c = try XCTUnwrap(calls(r, function).first, r.raw)
            XCTAssertEqual(c["ended"] as? String, "exit", r.raw)
            XCTAssertEqual(arg0(c), code)
            XCTAssertEqual(calls(r, "endings:plain").count, 2)
            assertNothingLost(r)
            let pid = try XCTUnwrap(r.exited["pid"] as? Int)
            XCTAssertNotEqual(access("/tmp/perf-\(pid).map", F_OK), 0, "the exited process's perf map went with it")
        }
    }

    /// A forked child's calls end as its own: its exit inside a traced call is its exit (not the
    /// parent's, which goes on), and a traced call that runs exec ends at the exec.
    func testAForkedChildsCallEndsAtItsOwnExitOrExec() throws {
        let hooks = ["endings:exit_in", "endings:exec_in", "endings:plain"].flatMap { ["--trace", $0, "--count", $0] }
        let r = try run("endings", hooks, stdin: "ret 1\nforkexit 5\nforkexec\nret 2\n")
        XCTAssertEqual(r.status, 0, r.raw)
        XCTAssertEqual(Array(r.said.dropFirst()), ["0", "child 5", "child 0", "3"], r.raw)
        let parent = try XCTUnwrap(r.exited["pid"] as? Int)
        let exitIn = try XCTUnwrap(calls(r, "endings:exit_in").first, r.raw)
        let execIn = try XCTUnwrap(calls(r, "endings:exec_in").first, r.raw)
        XCTAssertEqual(exitIn["ended"] as? String, "exit", r.raw)
        XCTAssertEqual(execIn["ended"] as? String, "exec", r.raw)
        XCTAssertNotEqual(exitIn["pid"] as? Int, parent)
        XCTAssertNotEqual(execIn["pid"] as? Int, parent)
        XCTAssertLessThan(exitIn["ns"] as? Int ?? .max, 1_000_000_000, "ended at the child's exit, not at the end: \(exitIn)")
        XCTAssertEqual(calls(r, "endings:plain").map { $0["ended"] as? String }, ["returned", "returned", "returned"])
        XCTAssertEqual(calls(r, "endings:plain").compactMap { $0["pid"] as? Int }, [parent, parent, parent])
        XCTAssertEqual(r.counted["endings:plain"], 3)
        XCTAssertEqual((r.exited["traced"] as? Int ?? -1) + (r.exited["dropped"] as? Int ?? 0), 5, "traced + dropped = the family's calls")
    }

    /// The text output says how a call ended where a returned one shows its value.
    func testTextOutputNamesTheEnding() throws {
        let r = runProgram([Repo.hookit, "run", "--trace", "cxxtarget:relay*", "--trace", "cxxtarget:thrower", "--",
                            Repo.target("cxxtarget")], stdin: "relay2 -1\nrelay 1\nquit\n")
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.output.split(separator: "\n").filter { $0.contains("cxxtarget:") }
        XCTAssertEqual(lines.filter { $0.contains("[unwound]") }.count, 3, r.output)
        XCTAssertEqual(lines.filter { $0.contains(") = 0x") }.count, 2, r.output)
    }
}
