import Foundation
import Glibc
import TestSupport
import XCTest

/// A process that runs execve keeps its session (issue 17, part 3): the new image gets every
/// hook, an `exec` event says so, and counts and traces go on across it.
final class ExecFollowTests: XCTestCase {
    private func calls(_ events: [[String: Any]], _ function: String) -> Int? {
        events.last { $0["event"] as? String == "stats" && $0["function"] as? String == function }?["calls"] as? Int
    }

    private func checkSchema(_ output: String) throws {
        let schema = try EventSchema(markdown: String(contentsOfFile: Repo.root + "/docs/events.md", encoding: .utf8))
        for l in output.split(separator: "\n") where l.hasPrefix("{") { XCTAssertEqual(schema.check(line: String(l)), [], String(l)) }
    }

    func testRunThroughAShellWrapperThatExecsHooksTheRealProgram() throws {
        let wrapper = NSTemporaryDirectory() + "hookit-wrapper-\(getpid()).sh"
        defer { unlink(wrapper) }
        try "#!/bin/sh\nexport WRAPPED=1\nexec \(Repo.target("hooktarget")) \"$@\"\n".write(toFile: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper, 0o755)
        let run = runProgram([Repo.hookit, "run", "--json", "--count", "hooktarget:add", "--trace", "hooktarget:add", "--", wrapper],
                             stdin: "add 2 3\nadd 4 5\nadd 1 1\ncalls\nquit\n")
        XCTAssertEqual(run.status, 0, run.stderr)
        let lines = run.output.split(separator: "\n")
        XCTAssertEqual(lines.filter { !$0.hasPrefix("{") }.map(String.init).dropFirst(), ["5", "9", "2", "3", "bye"], run.output)
        let events = events(run.output)
        let exec = try XCTUnwrap(events.first { $0["event"] as? String == "exec" }, run.output)
        XCTAssertEqual(exec["path"] as? String, Repo.target("hooktarget"))
        XCTAssertEqual(exec["functions"] as? Int, 1)
        XCTAssertEqual(events.filter { $0["event"] as? String == "pending" }.compactMap { $0["request"] as? String },
                       ["--count hooktarget:add", "--trace hooktarget:add"], "said once each, for the shell: \(run.output)")
        XCTAssertEqual(calls(events, "hooktarget:add"), 3, run.output)
        let traced = events.filter { $0["event"] as? String == "call" && $0["function"] as? String == "hooktarget:add" }
        XCTAssertEqual(traced.compactMap { $0["ret"] as? Int }, [5, 9, 2], run.output)
        let exited = try XCTUnwrap(events.last, run.output)
        XCTAssertEqual(exited["event"] as? String, "exited")
        XCTAssertEqual(exited["pending"] as? [String], [], "hooktarget:add matched after the exec")
        XCTAssertEqual((exited["traced"] as? Int ?? 0) + (exited["dropped"] as? Int ?? 0), 3)
        try checkSchema(run.output)
    }

    func testAttachedProcessThatExecsKeepsItsHooksAndCounts() throws {
        let target = try TargetProcess("hooktarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--count", "hooktarget:add", "--trace", "hooktarget:add"])
        try attached(h, target)
        XCTAssertEqual(try target.send("add 1 1"), "2")
        XCTAssertEqual(try target.send("exec \(Repo.target("hooktarget"))"), "ready \(target.pid)")
        XCTAssertTrue(h.waitFor("\"event\":\"exec\""), h.text)
        XCTAssertEqual(try target.send("add 2 3"), "5")
        XCTAssertEqual(try target.send("add 4 5"), "9")
        XCTAssertEqual(try target.send("calls"), "2", "the new image's own count of add calls")
        XCTAssertTrue(h.waitFor("\"ret\":9"), h.text)
        let r = h.finish()
        XCTAssertEqual(r.status, 0, r.output)
        let events = events(r.output)
        XCTAssertEqual(calls(events, "hooktarget:add"), 3, "1 before the exec, 2 after: \(r.output)")
        let traced = events.filter { $0["event"] as? String == "call" }.compactMap { $0["ret"] as? Int }
        XCTAssertEqual(traced, [2, 5, 9], r.output)
        let detached = try XCTUnwrap(events.last, r.output)
        XCTAssertEqual(detached["event"] as? String, "detached")
        XCTAssertEqual(detached["restored"] as? Int, 1, "the new image's add")
        XCTAssertEqual(try target.send("add 6 1"), "7", "the new image runs on unhooked")
        XCTAssertEqual(try target.send("calls"), "3")
        try checkSchema(r.output)
    }
}
