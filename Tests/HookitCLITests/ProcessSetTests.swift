import Foundation
import Glibc
import TestSupport
import XCTest

/// Several processes in one session (issue 18, part 5): `attach --name NAME` and
/// `attach PID PID ...`. Every event carries its pid, counts are per process, a process that
/// cannot be hooked is reported and leaves the others hooked, and every one is restored at
/// detach.
final class ProcessSetTests: XCTestCase {
    /// Targets that share a name no other process on the machine has (other test runs start
    /// hooktargets too): `count` hooktargets started through a symlink, so their comm is the
    /// link's name while their executable, and so their module, stays hooktarget.
    private func namesakes(_ count: Int, _ dir: TempDir) throws -> (name: String, targets: [TargetProcess]) {
        Repo.buildTargets()
        let name = "hkps\(getpid() % 100_000)"
        let link = dir.path + "/" + name
        guard symlink(Repo.target("hooktarget"), link) == 0 else { throw TestError("symlink \(link): errno \(errno)") }
        return (name, try (0..<count).map { _ in try TargetProcess(path: link, waitForReady: true) })
    }

    /// Until hookit has reported `n` processes attached (JSON or text).
    private func attached(_ h: Background, count n: Int) throws {
        let end = now() + 30
        while now() < end {
            let t = h.text
            if t.components(separatedBy: "\"event\":\"attached\"").count - 1 >= n || t.components(separatedBy: "] attached ").count - 1 >= n { return }
            usleep(20_000)
        }
        throw TestError("hookit did not attach to \(n) processes: \(h.finish(SIGKILL).output)")
    }

    private func calls(_ t: TargetProcess) throws -> Int { try XCTUnwrap(Int(try t.send("calls"))) }

    /// What a process looks like after hookit left it: not traced, add's code as in the file,
    /// and still answering.
    private func assertLeftAlone(_ t: TargetProcess, file: StaticString = #filePath, line: UInt = #line) throws {
        let status = (try? String(contentsOfFile: "/proc/\(t.pid)/status", encoding: .utf8)) ?? ""
        XCTAssertTrue(status.contains("TracerPid:\t0\n"), "PID \(t.pid) is not traced any more", file: file, line: line)
        XCTAssertTrue(try codeEqualsFile(t, "add"), "add restored in \(t.pid)", file: file, line: line)
        XCTAssertEqual(try t.send("add 2 3"), "5", file: file, line: line)
    }

    /// `--name` takes both processes of that name; each one's count is exactly the calls it
    /// made itself (its own `add_calls`), in the JSON stats and in the Prometheus file; SIGTERM
    /// detaches both.
    func testNameHooksEveryProcessOfThatNameWithItsOwnExactCounts() throws {
        let dir = try TempDir()
        let (name, targets) = try namesakes(2, dir)
        let before = try targets.map(calls)
        let prom = dir.path + "/hookit.prom"
        let h = Background(["attach", "--name", name, "--json", "--count", "hooktarget:add", "--prometheus", prom])
        try attached(h, count: 2)
        for i in 1...3 { XCTAssertEqual(try targets[0].send("add \(i) 1"), "\(i + 1)") }
        for i in 1...5 { XCTAssertEqual(try targets[1].send("add \(i) 2"), "\(i + 2)") }
        let made = try zip(targets.map(calls), before).map { $0 - $1 }
        XCTAssertEqual(made, [3, 5])
        let r = h.finish(SIGTERM)
        XCTAssertEqual(r.status, 0, r.output)
        let events = events(r.output)
        XCTAssertEqual(Set(events.filter { $0["event"] as? String == "attached" }.compactMap { $0["pid"] as? Int }),
                       Set(targets.map { Int($0.pid) }), r.output)
        let stats = events.filter { $0["event"] as? String == "stats" && $0["final"] as? Bool == true }
        for (t, n) in zip(targets, made) {
            XCTAssertEqual(stats.filter { $0["pid"] as? Int == Int(t.pid) }.map { $0["calls"] as? Int }, [n], r.output)
            XCTAssertEqual(events.filter { $0["event"] as? String == "detached" && $0["pid"] as? Int == Int(t.pid) }.count, 1, r.output)
            let series = "hookit_calls_total{pid=\"\(t.pid)\",process=\"\(name)\",function=\"hooktarget:add\"} \(n)\n"
            XCTAssertTrue(try String(contentsOfFile: prom, encoding: .utf8).contains(series), series)
            try assertLeftAlone(t)
        }
        let schema = try EventSchema(markdown: String(contentsOfFile: Repo.root + "/docs/events.md", encoding: .utf8))
        for l in r.output.split(separator: "\n") { XCTAssertEqual(schema.check(line: String(l)), [], String(l)) }
    }

    /// Of four PIDs, one is dead, one a 32-bit process and one already traced (by another
    /// hookit): each is an error naming its pid and why, and the fourth is hooked and counted
    /// all the same, in the text output, every line of which says whose it is. The session ends
    /// at --duration with status 0.
    func testSeveralPidsWhereSomeCannotBeHookedTheOthersAreHookedAndCounted() throws {
        let dead = try TargetProcess("hooktarget")
        dead.kill()
        let x86_32 = try TargetProcess("x86_32", waitForReady: false)
        let traced = try TargetProcess("hooktarget")
        let other = Background(["attach", "\(traced.pid)", "--count", "hooktarget:add"])
        try attached(other, traced)
        defer { _ = other.finish() }
        let live = try TargetProcess("hooktarget")
        let before = try calls(live)
        let h = Background(["attach", "\(dead.pid)", "\(x86_32.pid)", "\(traced.pid)", "\(live.pid)", "--count", "hooktarget:add",
                            "--duration", "4"])
        try attached(h, count: 1)
        for i in 1...4 { XCTAssertEqual(try live.send("add \(i) 0"), "\(i)") }
        XCTAssertEqual(try calls(live) - before, 4)
        let r = h.finish(nil)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("hookit: error: no process with PID \(dead.pid)"), r.output)
        XCTAssertTrue(r.output.contains("hookit: error: PID \(x86_32.pid) is not an x86-64 process"), r.output)
        XCTAssertTrue(r.output.contains("hookit: error: PID \(traced.pid) is already traced by PID \(other.pid) (hookit)"), r.output)
        let lines = r.output.split(separator: "\n").map(String.init)
        let row = try XCTUnwrap(lines.first { $0.hasPrefix("[\(live.pid)] hooktarget:add ") }, r.output)
        XCTAssertEqual(row.split(separator: " ", omittingEmptySubsequences: true)[2], "4", row)
        let session = lines.filter { !$0.hasPrefix("hookit: ") && !$0.isEmpty }
        XCTAssertTrue(session.allSatisfy { $0.hasPrefix("[\(live.pid)] ") }, "every line names its process: \(r.output)")
        XCTAssertEqual(lines.filter { $0.hasPrefix("[\(live.pid)] detached: 1 function(s) restored") }.count, 1, r.output)
        try assertLeftAlone(live)
        XCTAssertEqual(try traced.send("add 1 1"), "2", "the other hookit's process was not touched")
    }

    /// When no process can be hooked, hookit says so and exits non-zero.
    func testNoneOfSeveralPidsHookableIsAFailure() throws {
        let a = try TargetProcess("hooktarget"), b = try TargetProcess("hooktarget")
        a.kill(); b.kill()
        let r = runProgram([Repo.hookit, "attach", "\(a.pid)", "\(b.pid)", "--json", "--count", "hooktarget:add"])
        XCTAssertEqual(r.status, 1, r.output)
        let errors = events(r.output).filter { $0["event"] as? String == "error" }
        XCTAssertEqual(errors.map { $0["pid"] as? Int }, [Int(a.pid), Int(b.pid), nil], r.output)
        XCTAssertEqual(errors.map { $0["fatal"] as? Bool }, [false, false, true], r.output)
        XCTAssertTrue(r.stderr.contains("none of the 2 processes could be hooked (PID \(a.pid), \(b.pid))"), r.stderr)
    }

    /// A `--name` that names nothing is an error listing the running names near it (here a
    /// letter short of a real one), with their pids, and touches nothing.
    func testNameWithNoMatchIsAnErrorListingNearNames() throws {
        let dir = try TempDir()
        let (name, targets) = try namesakes(1, dir)
        let typo = String(name.dropLast())
        let r = runProgram([Repo.hookit, "attach", "--name", typo, "--count", "hooktarget:add"])
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.stderr.contains("no running process is named '\(typo)'"), r.stderr)
        XCTAssertTrue(r.stderr.contains("near names: \(name) (PID \(targets[0].pid))"), r.stderr)
        XCTAssertEqual(try targets[0].send("add 1 2"), "3")
        let status = (try? String(contentsOfFile: "/proc/\(targets[0].pid)/status", encoding: .utf8)) ?? ""
        XCTAssertTrue(status.contains("TracerPid:\t0\n"))
    }

    /// `--trace` over two processes: each call carries the pid of the process that made it, in
    /// the JSON events, in the Chrome trace (a process track each) and in the OTLP file (a
    /// resource each).
    func testTracedCallsOfTwoProcessesCarryTheirPidInEveryOutput() throws {
        let dir = try TempDir()
        let (_, targets) = try namesakes(2, dir)
        let chrome = dir.path + "/trace.json", otlp = dir.path + "/spans.jsonl"
        let h = Background(["attach", "\(targets[0].pid)", "\(targets[1].pid)", "--json", "--trace", "hooktarget:add",
                            "--sig", "add(long, long) -> long", "--output", chrome, "--otlp", otlp])
        try attached(h, count: 2)
        for _ in 0..<2 { XCTAssertEqual(try targets[0].send("add 1 1"), "2") }
        for _ in 0..<3 { XCTAssertEqual(try targets[1].send("add 5 5"), "10") }
        let r = h.finish()
        XCTAssertEqual(r.status, 0, r.output)
        let want = [Int(targets[0].pid): [2, 2], Int(targets[1].pid): [10, 10, 10]]
        let calls = events(r.output).filter { $0["event"] as? String == "call" }
        XCTAssertEqual(Dictionary(grouping: calls) { $0["pid"] as? Int ?? 0 }.mapValues { $0.compactMap { $0["ret"] as? Int } }, want, r.output)

        let trace = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: chrome))) as? [String: Any])
        let records = try XCTUnwrap(trace["traceEvents"] as? [[String: Any]])
        let tracks = records.filter { $0["name"] as? String == "process_name" }.compactMap { $0["pid"] as? Int }
        XCTAssertEqual(Set(tracks), Set(want.keys))
        let slices = records.filter { $0["ph"] as? String == "X" }
        XCTAssertEqual(Dictionary(grouping: slices) { $0["pid"] as? Int ?? 0 }.mapValues { $0.compactMap { ($0["args"] as? [String: Any])?["ret"] as? Int } }, want)

        var spans: [Int: [Int]] = [:]
        for line in try String(contentsOfFile: otlp, encoding: .utf8).split(separator: "\n") {
            let request = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            for rs in try XCTUnwrap(request["resourceSpans"] as? [[String: Any]]) {
                let attributes = ((rs["resource"] as? [String: Any])?["attributes"] as? [[String: Any]]) ?? []
                let pid = try XCTUnwrap(attributes.first { $0["key"] as? String == "process.pid" }
                    .flatMap { ($0["value"] as? [String: Any])?["intValue"] as? String }.flatMap { Int($0) })
                for ss in (rs["scopeSpans"] as? [[String: Any]]) ?? [] {
                    for span in (ss["spans"] as? [[String: Any]]) ?? [] {
                        let ret = ((span["attributes"] as? [[String: Any]]) ?? []).first { $0["key"] as? String == "hookit.ret" }
                        spans[pid, default: []] += [((ret?["value"] as? [String: Any])?["intValue"] as? String).flatMap { Int($0) } ?? -1]
                    }
                }
            }
        }
        XCTAssertEqual(spans, want)
        for t in targets { try assertLeftAlone(t) }
    }

    /// `--interactive` over two processes: each command applies to both, and each answers
    /// (`added` with the same id, `list` and `removed` with its own calls); end of input
    /// detaches both.
    func testInteractiveCommandsApplyToEveryProcess() throws {
        let dir = try TempDir()
        let (_, targets) = try namesakes(2, dir)
        let pids = targets.map { Int($0.pid) }
        let hookit = try TargetProcess(path: Repo.hookit, arguments: ["attach", "\(pids[0])", "\(pids[1])", "--interactive", "--json"])
        func next() throws -> [String: Any] {
            try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try hookit.readLine(timeout: 20).utf8)) as? [String: Any])
        }
        func replies(to command: String) throws -> [[String: Any]] {
            try hookit.write(command)
            return try [next(), next()]
        }
        XCTAssertEqual(try Set([next(), next()].compactMap { $0["pid"] as? Int }), Set(pids))
        let added = try replies(to: "add --count hooktarget:add")
        XCTAssertEqual(added.map { $0["event"] as? String }, ["added", "added"], "\(added)")
        XCTAssertEqual(Set(added.compactMap { $0["pid"] as? Int }), Set(pids))
        let id = try XCTUnwrap(added[0]["id"] as? Int)
        XCTAssertEqual(added[1]["id"] as? Int, id)
        for _ in 0..<2 { XCTAssertEqual(try targets[0].send("add 1 1"), "2") }
        for _ in 0..<4 { XCTAssertEqual(try targets[1].send("add 1 1"), "2") }
        let listed = try replies(to: "list")
        let listedCalls = Dictionary(uniqueKeysWithValues: listed.map { ($0["pid"] as? Int ?? 0, (($0["hooks"] as? [[String: Any]])?.first?["calls"] as? Int) ?? -1) })
        XCTAssertEqual(listedCalls, [pids[0]: 2, pids[1]: 4], "\(listed)")
        let removed = try replies(to: "remove \(id)")
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: removed.map { ($0["pid"] as? Int ?? 0, $0["calls"] as? Int ?? -1) }), [pids[0]: 2, pids[1]: 4])
        hookit.closeInput()
        XCTAssertEqual(hookit.waitExit(timeout: 20), 0)
        for t in targets { try assertLeftAlone(t) }
    }

    /// A process that exits mid-session is reported (`exited`, with its counts) and the other
    /// stays hooked and counted until the end.
    func testOneProcessExitingLeavesTheOtherHooked() throws {
        let dir = try TempDir()
        let (_, targets) = try namesakes(2, dir)
        let h = Background(["attach", "\(targets[0].pid)", "\(targets[1].pid)", "--json", "--count", "hooktarget:add"])
        try attached(h, count: 2)
        XCTAssertEqual(try targets[0].send("add 1 1"), "2")
        try targets[0].write("quit")
        XCTAssertNotNil(targets[0].waitExit(timeout: 10))
        XCTAssertTrue(h.waitFor("\"event\":\"exited\""), h.text)
        for _ in 0..<3 { XCTAssertEqual(try targets[1].send("add 1 1"), "2") }
        let r = h.finish()
        let events = events(r.output)
        let exited = try XCTUnwrap(events.first { $0["event"] as? String == "exited" }, r.output)
        XCTAssertEqual(exited["pid"] as? Int, Int(targets[0].pid))
        let stats = events.filter { $0["event"] as? String == "stats" }
        XCTAssertEqual(stats.filter { $0["pid"] as? Int == Int(targets[0].pid) }.map { $0["calls"] as? Int }, [1], r.output)
        XCTAssertEqual(stats.filter { $0["pid"] as? Int == Int(targets[1].pid) }.map { $0["calls"] as? Int }, [3], r.output)
        XCTAssertEqual(events.last?["event"] as? String, "detached")
        XCTAssertEqual(events.last?["pid"] as? Int, Int(targets[1].pid))
        XCTAssertEqual(r.status, 1, "a process ended under hookit, as with one process: \(r.output)")
        try assertLeftAlone(targets[1])
    }
}
