import Foundation
import Glibc
import TestSupport
import XCTest

/// Children the process forks are followed (issue 17, part 4): each is reported (`fork`), runs
/// the hooks (its calls count with the parent's and trace with its own pid), and at detach its
/// inherited entries are restored; `--no-follow` leaves them patched, as before.
final class ForkFollowTests: XCTestCase {
    /// The 5 bytes at `address` in process `pid`, read through /proc/PID/mem.
    private func entry(_ pid: pid_t, _ address: UInt64) throws -> [UInt8] {
        let fd = open("/proc/\(pid)/mem", O_RDONLY)
        guard fd >= 0 else { throw TestError("cannot open /proc/\(pid)/mem: errno \(errno)") }
        defer { close(fd) }
        var b = [UInt8](repeating: 0, count: 5)
        guard pread(fd, &b, 5, Int(bitPattern: UInt(address))) == 5 else { throw TestError("cannot read \(pid) at \(address)") }
        return b
    }

    private func forkedChild(_ follow: Bool) throws -> (child: pid_t, output: String, restoredInChild: Bool, parentEntry: [UInt8]) {
        let target = try TargetProcess("hooktarget")
        let add = try XCTUnwrap(UInt64(try target.send("addr add").dropFirst(2), radix: 16))
        let unhooked = try entry(target.pid, add)
        let h = Background(["attach", "\(target.pid)", "--json", "--count", "hooktarget:add"] + (follow ? [] : ["--no-follow"]))
        try attached(h, target)
        let line = try target.send("forkpark")
        let child = try XCTUnwrap(pid_t(line.split(separator: " ").last ?? ""), line)
        defer { kill(child, SIGKILL) }
        if follow { XCTAssertTrue(h.waitFor("\"event\":\"fork\""), h.text) }
        usleep(200_000)
        XCTAssertNotEqual(try entry(child, add), unhooked, "the child runs the parent's patched entry")
        let r = h.finish()
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(kill(child, 0), 0, "the child lives on")
        let status = (try? String(contentsOfFile: "/proc/\(child)/status", encoding: .utf8)) ?? ""
        XCTAssertTrue(status.contains("TracerPid:\t0\n"), "hookit let the child go: \(status)")
        XCTAssertEqual(try target.send("add 2 3"), "5")
        return (child, r.output, try entry(child, add) == unhooked, try entry(target.pid, add))
    }

    func testForkedChildIsFollowedCountedAndRestoredAtDetach() throws {
        let (child, output, restored, _) = try forkedChild(true)
        let events = events(output)
        let fork = try XCTUnwrap(events.first { $0["event"] as? String == "fork" }, output)
        XCTAssertEqual(fork["child"] as? Int, Int(child))
        let calls = events.last { $0["event"] as? String == "stats" }?["calls"] as? Int ?? 0
        XCTAssertGreaterThan(calls, 20, "the child's calls (one a ms) count: \(output)")
        XCTAssertTrue(restored, "detach restored the child's entry: \(output)")
        let schema = try EventSchema(markdown: String(contentsOfFile: Repo.root + "/docs/events.md", encoding: .utf8))
        for l in output.split(separator: "\n") { XCTAssertEqual(schema.check(line: String(l)), [], String(l)) }
    }

    func testNoFollowLeavesTheChildItsInheritedPatches() throws {
        let (_, output, restored, _) = try forkedChild(false)
        XCTAssertNil(events(output).first { $0["event"] as? String == "fork" }, output)
        XCTAssertFalse(restored, "without following, the child keeps the parent's patch")
    }

    /// `hookit run` ends when the whole family has exited: here the shell exits at once and its
    /// background child writes a file half a second later; the status is the shell's.
    func testRunEndsWhenTheWholeFamilyHasExited() throws {
        let file = NSTemporaryDirectory() + "hookit-family-\(getpid())"
        unlink(file)
        defer { unlink(file) }
        let run = runProgram([Repo.hookit, "run", "--json", "--count", "libc.so.6:getpid", "--",
                              "/bin/sh", "-c", "(sleep 0.5; echo done > \(file)) >/dev/null 2>&1 & exit 3"])
        XCTAssertEqual(run.status, 3, run.stderr)
        XCTAssertEqual(try? String(contentsOfFile: file, encoding: .utf8), "done\n", "the child had finished: \(run.output)")
        let events = events(run.output)
        XCTAssertGreaterThanOrEqual(events.filter { $0["event"] as? String == "fork" }.count, 1, run.output)
        XCTAssertEqual(events.last?["event"] as? String, "exited")
        XCTAssertEqual(events.last?["status"] as? Int, 3)
        let noFollow = runProgram([Repo.hookit, "run", "--json", "--no-follow", "--count", "libc.so.6:getpid", "--",
                                   "/bin/sh", "-c", "(sleep 2; echo late > \(file).nf) >/dev/null 2>&1 & exit 3"])
        defer { unlink(file + ".nf") }
        XCTAssertEqual(noFollow.status, 3, noFollow.stderr)
        XCTAssertNil(try? String(contentsOfFile: file + ".nf", encoding: .utf8), "--no-follow ends with the one process")
    }

    /// daemon(): the parent exits inside it and the child carries on, hooked, with its own pid;
    /// `run` goes on until the daemon quits.
    func testDaemonChildIsFollowedUntilItExits() throws {
        let run = runProgram([Repo.hookit, "run", "--json", "--trace", "hooktarget:add", "--count", "hooktarget:add", "--",
                              Repo.target("hooktarget")], stdin: "add 1 1\ndaemon\nadd 2 3\nquit\n")
        XCTAssertEqual(run.status, 0, run.stderr)
        let said = run.output.split(separator: "\n").filter { !$0.hasPrefix("{") }
        XCTAssertEqual(said.count, 5, run.output)                     // ready, 2, daemon PID, 5, bye
        let daemon = try XCTUnwrap(said.first { $0.hasPrefix("daemon ") }.flatMap { Int($0.split(separator: " ")[1]) }, run.output)
        XCTAssertEqual(said.suffix(2), ["5", "bye"])
        let events = events(run.output)
        XCTAssertEqual(events.first { $0["event"] as? String == "fork" }?["child"] as? Int, daemon, run.output)
        let calls = events.filter { $0["event"] as? String == "call" }
        XCTAssertEqual(calls.first { $0["ret"] as? Int == 5 }?["pid"] as? Int, daemon, run.output)
        XCTAssertEqual(events.last { $0["event"] as? String == "stats" }?["calls"] as? Int, 2, run.output)
        let exited = try XCTUnwrap(events.last, run.output)
        XCTAssertEqual(exited["event"] as? String, "exited")
        XCTAssertEqual((exited["traced"] as? Int ?? 0) + (exited["dropped"] as? Int ?? 0), 2, "traced + dropped = counted")
    }

    /// posix_spawn and system() start their child with vfork semantics (CLONE_VFORK): it runs in
    /// its parent's memory until it execs; its new image is then hooked by a session of its own.
    func testVforkedChildrenThatExecRunHookedInTheirNewImages() throws {
        let script = "import os, subprocess\nprint(subprocess.run(['/bin/echo', 'spawned']).returncode)\nprint(os.system('echo system'))\n"
        let run = runProgram([Repo.hookit, "run", "--json", "--count", "libc.so.6:getpid", "--", "/usr/bin/python3", "-c", script])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(run.output.split(separator: "\n").filter { !$0.hasPrefix("{") }, ["spawned", "0", "system", "0"], run.output)
        XCTAssertGreaterThanOrEqual(events(run.output).filter { $0["event"] as? String == "fork" }.count, 2, run.output)
        // python3, then /bin/echo and system()'s /bin/sh in their new images.
        let attached = events(run.output).filter { $0["event"] as? String == "attached" }
        XCTAssertGreaterThanOrEqual(Set(attached.compactMap { $0["pid"] as? Int }).count, 3, run.output)
        XCTAssertEqual(events(run.output).last?["event"] as? String, "exited")
    }

    func testTracedCallsOfAForkedChildCarryItsPid() throws {
        let run = runProgram([Repo.hookit, "run", "--json", "--trace", "hooktarget:add", "--count", "hooktarget:add", "--",
                              Repo.target("hooktarget")], stdin: "add 1 2\nforkadd 2 3\nforkadd 4 4\nquit\n")
        XCTAssertEqual(run.status, 0, run.stderr)
        let events = events(run.output)
        let parent = try XCTUnwrap(events.first { $0["event"] as? String == "attached" }?["pid"] as? Int)
        let forks = events.filter { $0["event"] as? String == "fork" }.compactMap { $0["child"] as? Int }
        XCTAssertEqual(forks.count, 2, run.output)
        let calls = events.filter { $0["event"] as? String == "call" }
        XCTAssertEqual(calls.compactMap { $0["ret"] as? Int }.sorted(), [3, 5, 8], run.output)
        XCTAssertEqual(calls.first { $0["ret"] as? Int == 3 }?["pid"] as? Int, parent)
        XCTAssertEqual(calls.first { $0["ret"] as? Int == 5 }?["pid"] as? Int, forks[0])
        XCTAssertEqual(calls.first { $0["ret"] as? Int == 8 }?["pid"] as? Int, forks[1])
        XCTAssertEqual(run.output.split(separator: "\n").filter { $0.hasPrefix("child") }, ["child 5", "child 8"])
        XCTAssertEqual(calls.map { $0["ended"] as? String }, ["returned", "returned", "returned"])
        // Nothing lost across the family: its calls count together, and each is traced or dropped.
        let counted = events.last { $0["event"] as? String == "stats" }?["calls"] as? Int
        let exited = try XCTUnwrap(events.last, run.output)
        XCTAssertEqual(counted, 3, run.output)
        XCTAssertEqual((exited["traced"] as? Int ?? 0) + (exited["dropped"] as? Int ?? 0), 3, "traced + dropped = counted")
    }

    /// A child that forks and then execs (a shell running a pipeline) is hooked in its new image
    /// by a session of its own: the patterns the shell could not match match the program, which
    /// reports as its own process.
    func testAForkedChildThatExecsIsHookedInItsNewImage() throws {
        let script = "printf 'add 1 2\\nadd 2 3\\ncalls\\nquit\\n' | \(Repo.target("hooktarget")); echo after"
        let run = runProgram([Repo.hookit, "run", "--json", "--count", "hooktarget:add", "--trace", "hooktarget:add", "--",
                              "/bin/sh", "-c", script])
        XCTAssertEqual(run.status, 0, run.stderr)
        let said = run.output.split(separator: "\n").filter { !$0.hasPrefix("{") }.map(String.init)
        XCTAssertEqual(Array(said.dropFirst()), ["3", "5", "2", "bye", "after"], run.output)
        let events = events(run.output)
        let attached = events.filter { $0["event"] as? String == "attached" }
        XCTAssertEqual(attached.count, 2, "the shell, then the program it exec'd: \(run.output)")
        let shell = try XCTUnwrap(attached.first?["pid"] as? Int), program = try XCTUnwrap(attached.last?["pid"] as? Int)
        XCTAssertNotEqual(shell, program)
        XCTAssertEqual(attached.last?["functions"] as? Int, 1)
        let calls = events.filter { $0["event"] as? String == "call" }
        XCTAssertEqual(calls.compactMap { $0["ret"] as? Int }, [3, 5], run.output)
        XCTAssertEqual(Set(calls.compactMap { $0["pid"] as? Int }), [program])
        let counted = events.last { $0["event"] as? String == "stats" && $0["pid"] as? Int == program }
        XCTAssertEqual(counted?["calls"] as? Int, 2, run.output)
        let exits = events.filter { $0["event"] as? String == "exited" }
        XCTAssertEqual(exits.count, 2, run.output)
        XCTAssertEqual((exits.first?["traced"] as? Int ?? 0) + (exits.first?["dropped"] as? Int ?? 0), 2, "traced + dropped = counted")
        XCTAssertEqual(events.last?["event"] as? String, "exited")
        XCTAssertEqual(events.last?["pending"] as? [String], [], "the program matched what the shell could not: \(run.output)")
    }
}
