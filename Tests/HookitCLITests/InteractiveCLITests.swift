import CPtrace
import Foundation
import Glibc
import TestSupport
import XCTest

/// `hookit attach PID --interactive --json`, driven through a pipe as a script would.
final class InteractiveCLITests: XCTestCase {
    private func event(_ line: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], line)
    }

    /// The next JSON line of the session (skipping nothing: every reply is one line).
    private func reply(_ hookit: TargetProcess, to command: String) throws -> [String: Any] {
        try event(try hookit.send(command, timeout: 20))
    }

    /// The users' options work live too: a trace and an override added and removed in a session;
    /// trace events arrive between the replies. fallible is 5 bytes, and greet (traced first)
    /// follows it at the next 16 bytes: hooking fallible must not take greet's live patch,
    /// inside fallible's 32-byte read, for a foreign one.
    func testTraceAndOverrideAddedAndRemovedLive() throws {
        let target = try TargetProcess("hooktarget")
        let hookit = try TargetProcess(path: Repo.hookit, arguments: ["attach", "\(target.pid)", "--interactive", "--json"])
        XCTAssertEqual(try event(try hookit.readLine(timeout: 20))["event"] as? String, "attached")
        let trace = try reply(hookit, to: "add --trace hooktarget:greet --sig greet(str)->long")
        let traceID = try XCTUnwrap(trace["id"] as? Int, "\(trace)")
        XCTAssertEqual(try target.send("greet live"), "4")
        let call = try event(try hookit.readLine(timeout: 10))
        XCTAssertEqual(call["event"] as? String, "call")
        XCTAssertEqual(call["args"] as? [String], ["live"])
        XCTAssertEqual(call["ret"] as? Int, 4)
        let override = try reply(hookit, to: "add --override hooktarget:fallible=-1 --errno EIO")
        XCTAssertEqual(override["event"] as? String, "added", "\(override)")
        XCTAssertEqual(try target.send("fallible 3"), "-1 5 1")
        XCTAssertEqual(try reply(hookit, to: "remove \(try XCTUnwrap(override["id"] as? Int))")["event"] as? String, "removed")
        XCTAssertEqual(try target.send("fallible 3"), "6 0 0")
        XCTAssertEqual(try reply(hookit, to: "remove \(traceID)")["event"] as? String, "removed")
        XCTAssertEqual(try target.send("greet again"), "5")
        XCTAssertEqual(try reply(hookit, to: "add --trace")["event"] as? String, "error", "a bad add is an error reply")
        hookit.closeInput()
        XCTAssertEqual(hookit.waitExit(timeout: 20), 0)
        XCTAssertTrue(try codeEqualsFile(target, "greet"))
        XCTAssertTrue(try codeEqualsFile(target, "fallible"))
    }

    func testAddListRemoveDetachLiveThroughAPipe() throws {
        let target = try TargetProcess("hooktarget")
        let hookit = try TargetProcess(path: Repo.hookit, arguments: ["attach", "\(target.pid)", "--interactive", "--json"])
        let attached = try event(try hookit.readLine(timeout: 20))
        XCTAssertEqual(attached["event"] as? String, "attached")
        XCTAssertEqual(attached["functions"] as? Int, 0)

        let added = try reply(hookit, to: "add --count hooktarget:add")
        XCTAssertEqual(added["event"] as? String, "added")
        XCTAssertEqual(added["functions"] as? Int, 1)
        let id = try XCTUnwrap(added["id"] as? Int)
        for i in 1...5 { XCTAssertEqual(try target.send("add \(i) 1"), "\(i + 1)") }

        let progs = Repo.target("libprogs.so")
        let second = try reply(hookit, to: "add --prog fexit:hooktarget:add=\(progs):record_exit --count hooktarget:patch5")
        XCTAssertEqual(second["functions"] as? Int, 2)
        XCTAssertEqual(try target.send("add 20 22"), "42")
        XCTAssertTrue(try target.send("progs").contains("exit_ret=42"), "the fexit program added live ran")

        let list = try reply(hookit, to: "list")
        let hooks = try XCTUnwrap(list["hooks"] as? [[String: Any]])
        XCTAssertEqual(hooks.count, 2)
        XCTAssertEqual(hooks.first { $0["id"] as? Int == id }?["calls"] as? Int, 6)

        let removed = try reply(hookit, to: "remove \(id)")
        XCTAssertEqual(removed["event"] as? String, "removed")
        XCTAssertEqual(removed["calls"] as? Int, 6)
        XCTAssertEqual(try target.send("add 1 1"), "2")

        let bad = try reply(hookit, to: "remove 99")
        XCTAssertEqual(bad["event"] as? String, "error")
        let unknown = try reply(hookit, to: "add --count hooktarget:no_such_function")
        XCTAssertEqual(unknown["event"] as? String, "error")
        XCTAssertTrue((unknown["message"] as? String)?.contains("no function matches") ?? false)

        try hookit.write("detach")
        var last: [String: Any] = [:]
        while let l = try? hookit.readLine(timeout: 20) { last = try event(l); if last["event"] as? String == "detached" { break } }
        XCTAssertEqual(last["event"] as? String, "detached")
        XCTAssertEqual(hookit.waitExit(timeout: 20), 0)
        XCTAssertTrue(try codeEqualsFile(target, "add"), "add's code equals the file again")
        XCTAssertTrue(try codeEqualsFile(target, "patch5"))
        XCTAssertEqual(try target.send("add 2 3"), "5")
    }

    /// Issue 5's churn: 8 threads call `add` at full speed while the session links and unlinks
    /// another program on it 1,000 times; a count attached for the whole window counts exactly
    /// the calls the target made; every result is right; detach leaves the code as the file.
    func testChurnThroughTheSessionKeepsCountsExact() throws {
        let target = try TargetProcess("hooktarget")
        XCTAssertEqual(try target.send("spinbg 8"), "spinning 8")
        let hookit = try TargetProcess(path: Repo.hookit, arguments: ["attach", "\(target.pid)", "--interactive", "--json"])
        _ = try hookit.readLine(timeout: 20)
        let progs = Repo.target("libprogs.so")
        let other = "add --prog fexit:hooktarget:add=\(progs):record_exit"
        // Load the program library before the window (loading is a remote call).
        let warm = try XCTUnwrap(try reply(hookit, to: other)["id"] as? Int)
        _ = try reply(hookit, to: "remove \(warm)")

        XCTAssertEqual(try target.send("pause"), "paused 8")
        let countID = try XCTUnwrap(try reply(hookit, to: "add --count hooktarget:add")["id"] as? Int)
        let before = try XCTUnwrap(Int(try target.send("calls")))
        XCTAssertEqual(try target.send("resume"), "resumed")
        for i in 0..<1000 {
            let added = try reply(hookit, to: other)
            let id = try XCTUnwrap(added["id"] as? Int, "\(i): \(added)")
            XCTAssertEqual(try reply(hookit, to: "remove \(id)")["event"] as? String, "removed")
        }
        XCTAssertEqual(try target.send("pause"), "paused 8")
        let after = try XCTUnwrap(Int(try target.send("calls")))
        let hooks = try XCTUnwrap(try reply(hookit, to: "list")["hooks"] as? [[String: Any]])
        let counted = try XCTUnwrap(hooks.first { $0["id"] as? Int == countID }?["calls"] as? Int)
        XCTAssertGreaterThan(after - before, 10_000)
        XCTAssertEqual(counted, after - before, "no call lost or counted twice across 2,000 image swaps")
        XCTAssertEqual(try target.send("resume"), "resumed")
        try hookit.write("detach")
        XCTAssertEqual(hookit.waitExit(timeout: 30), 0)
        XCTAssertTrue(try codeEqualsFile(target, "add"))
        let maps = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
        XCTAssertEqual(maps.split(separator: "\n").filter { $0.split(separator: " ").count == 5 && $0.contains(" r-xp ") }, [],
                       "no hookit code page left")
        XCTAssertTrue(try target.send("stop").hasPrefix("stopped "))
        XCTAssertEqual(try target.send("spinbad"), "0")
    }

    func testLibraryLoadedAfterAttachCanBeHookedAndForkStillWorks() throws {
        let target = try TargetProcess("hooktarget")
        let hookit = try TargetProcess(path: Repo.hookit, arguments: ["attach", "\(target.pid)", "--interactive", "--json"])
        _ = try hookit.readLine(timeout: 20)
        let lib = Repo.target("libplugin.so")
        XCTAssertEqual(try target.send("load \(lib)"), "loaded")           // after attach
        let added = try reply(hookit, to: "add --count libplugin.so:plugin_answer --count hooktarget:add")
        XCTAssertEqual(added["event"] as? String, "added", "\(added)")
        XCTAssertEqual(added["functions"] as? Int, 2)
        // fork in a hooked process: the child, followed, runs the hooked code and gets it right;
        // its calls are counted too (the counters are shared memory, as a uprobe counts a
        // forked child). Its fork event comes before the child can run.
        XCTAssertEqual(try target.send("forkadd 20 22"), "child 42")
        let fork = try event(try hookit.readLine(timeout: 20))
        XCTAssertEqual(fork["event"] as? String, "fork", "\(fork)")
        XCTAssertEqual(fork["pid"] as? Int, Int(target.pid))
        XCTAssertEqual(try target.send("add 1 1"), "2")
        let hooks = try XCTUnwrap(try reply(hookit, to: "list")["hooks"] as? [[String: Any]])
        XCTAssertEqual(hooks.first?["calls"] as? Int, 2, "the parent's call and the child's")
        hookit.closeInput()
        XCTAssertEqual(hookit.waitExit(timeout: 20), 0)
        XCTAssertTrue(try codeEqualsFile(target, "add"))
    }

    func testEndOfInputDetaches() throws {
        let target = try TargetProcess("hooktarget")
        let hookit = try TargetProcess(path: Repo.hookit, arguments: ["attach", "\(target.pid)", "--interactive", "--json"])
        _ = try hookit.readLine(timeout: 20)
        XCTAssertEqual(try reply(hookit, to: "add --count hooktarget:patch5")["event"] as? String, "added")
        hookit.closeInput()
        XCTAssertEqual(hookit.waitExit(timeout: 20), 0)
        XCTAssertTrue(try codeEqualsFile(target, "patch5"))
        XCTAssertEqual(try target.send("patch5 2"), "6")
    }
}
