import Foundation
import Glibc
import TestSupport
import XCTest

/// Libraries the process loads after hookit attached (issue 17, part 5): a pattern whose
/// module is not loaded yet is pending, and is applied when the module is mapped, before any of
/// its code runs (its constructor is counted).
final class LaterLibraryTests: XCTestCase {
    private let plugin = Repo.target("libplugin.so")

    private func stats(_ events: [[String: Any]]) -> [String: Int] {
        var out: [String: Int] = [:]
        for e in events where e["event"] as? String == "stats" && (e["final"] as? Bool ?? true) {
            out[e["function"] as? String ?? "", default: 0] += e["calls"] as? Int ?? 0
        }
        return out
    }

    private func attach(_ target: TargetProcess, _ args: [String]) throws -> Background {
        let h = Background(["attach", "\(target.pid)", "--json"] + args)
        try attached(h, target)
        return h
    }

    func testPendingPatternCountsAndTracesALibraryDlopenedAfterAttach() throws {
        let target = try TargetProcess("hooktarget")
        let h = try attach(target, ["--count", "libplugin.so:plugin_*", "--trace", "*:plugin_answer"])
        XCTAssertEqual(try target.send("load \(plugin)"), "loaded")
        XCTAssertTrue(h.waitFor("\"event\":\"loaded\""), h.text)
        XCTAssertEqual(try target.send("plugcall 7"), "called 7 29421")      // Σ 4200 + i, i < 7
        XCTAssertTrue(h.waitFor("\"ret\":4206"), h.text)
        let r = h.finish()
        XCTAssertEqual(r.status, 0, r.output)
        let events = events(r.output)
        let pending = events.filter { $0["event"] as? String == "pending" }.compactMap { $0["request"] as? String }
        XCTAssertEqual(pending, ["--count libplugin.so:plugin_*", "--trace *:plugin_answer"], r.output)
        let loaded = try XCTUnwrap(events.first { $0["event"] as? String == "loaded" }, r.output)
        XCTAssertEqual(loaded["module"] as? String, "libplugin.so")
        let counts = stats(events)
        XCTAssertEqual(counts["libplugin.so:plugin_answer"], 7, r.output)
        // The constructor ran inside dlopen, after the module was mapped: already hooked.
        XCTAssertEqual(counts["libplugin.so:plugin_init"], 1, r.output)
        let calls = events.filter { $0["event"] as? String == "call" && $0["function"] as? String == "libplugin.so:plugin_answer" }
        let detached = try XCTUnwrap(events.last, r.output)
        XCTAssertEqual(detached["event"] as? String, "detached")
        XCTAssertEqual(calls.count + (detached["dropped"] as? Int ?? -1), 7, "traced + dropped = calls counted")
        XCTAssertEqual((detached["pending"] as? [String])?.count, 0, r.output)
        XCTAssertEqual(detached["restored"] as? Int, 2)
        XCTAssertEqual(try target.send("plugcall 2"), "called 2 8401", "the library runs on after detach")
        let schema = try EventSchema(markdown: String(contentsOfFile: Repo.root + "/docs/events.md", encoding: .utf8))
        for l in r.output.split(separator: "\n") { XCTAssertEqual(schema.check(line: String(l)), [], String(l)) }
    }

    func testLibraryDlopenedTwiceWithDlcloseBetweenStaysHookedAndPinned() throws {
        let target = try TargetProcess("hooktarget")
        let h = try attach(target, ["--count", "libplugin.so:*", "--trace", "libplugin.so:plugin_answer"])
        XCTAssertEqual(try target.send("load \(plugin)"), "loaded")
        XCTAssertEqual(try target.send("plugcall 5"), "called 5 21010")
        XCTAssertEqual(try target.send("unload"), "unloaded")
        // Pinned while hooked: the program's dlclose does not unmap it, so nothing can run into
        // a patch of code that is gone.
        XCTAssertEqual(try target.send("mapped libplugin.so"), "mapped")
        XCTAssertEqual(try target.send("load \(plugin)"), "loaded")
        XCTAssertEqual(try target.send("plugcall 3"), "called 3 12603")
        let r = h.finish()
        XCTAssertEqual(r.status, 0, r.output)
        let events = events(r.output)
        let counts = stats(events)
        XCTAssertEqual(counts["libplugin.so:plugin_answer"], 8, r.output)
        XCTAssertEqual(counts["libplugin.so:plugin_init"], 1, "one load, one constructor run: \(r.output)")
        XCTAssertEqual(events.filter { $0["event"] as? String == "loaded" }.count, 1, r.output)
        let traced = events.filter { $0["event"] as? String == "call" }
        XCTAssertEqual(traced.filter { $0["ended"] as? String == "returned" }.count, traced.count, r.output)
        XCTAssertEqual(traced.count + (events.last?["dropped"] as? Int ?? -1), 8, "traced + dropped = calls counted: \(r.output)")
        // Detach gave the pin back: the program's own dlclose now unloads it.
        XCTAssertEqual(try target.send("unload"), "unloaded")
        XCTAssertEqual(try target.send("mapped libplugin.so"), "unmapped")
        XCTAssertEqual(try target.send("load \(plugin)"), "loaded")
        XCTAssertEqual(try target.send("plugcall 1"), "called 1 4200")
    }

    func testDetachedNamesThePendingPatternsThatNeverMatched() throws {
        let target = try TargetProcess("hooktarget")
        let h = try attach(target, ["--count", "hooktarget:patch5", "--count", "libnever.so*:*"])
        XCTAssertEqual(try target.send("patch5 2"), "6")
        XCTAssertEqual(try target.send("load \(plugin)"), "loaded")       // another library: no match
        let r = h.finish()
        XCTAssertEqual(r.status, 0, r.output)
        let events = events(r.output)
        XCTAssertEqual(stats(events)["hooktarget:patch5"], 1, r.output)
        XCTAssertNil(events.first { $0["event"] as? String == "loaded" }, r.output)
        let detached = try XCTUnwrap(events.last, r.output)
        XCTAssertEqual(detached["pending"] as? [String], ["--count libnever.so*:*"], r.output)
        XCTAssertEqual(try target.send("ping"), "pong")
    }

    /// An interactive `add` may wait for a library too.
    func testInteractiveAddOfAPendingPatternAppliesWhenTheLibraryIsLoaded() throws {
        let target = try TargetProcess("hooktarget")
        let hookit = try TargetProcess(path: Repo.hookit, arguments: ["attach", "\(target.pid)", "--json", "--interactive"])
        defer { hookit.kill() }
        XCTAssertTrue(try hookit.readLine(timeout: 20).contains("\"attached\""))
        try hookit.write("add --count libplugin.so:plugin_answer")
        XCTAssertTrue(try hookit.readLine(timeout: 20).contains("\"event\":\"pending\""))
        XCTAssertTrue(try hookit.readLine(timeout: 20).contains("\"event\":\"added\""))
        XCTAssertEqual(try target.send("load \(plugin)"), "loaded")
        XCTAssertTrue(try hookit.readLine(timeout: 20).contains("\"event\":\"loaded\""))
        XCTAssertEqual(try target.send("plugcall 3"), "called 3 12603")
        let list = try hookit.send("list", timeout: 20)
        XCTAssertTrue(list.contains("\"calls\":3,"), list)
        try hookit.write("detach")
        XCTAssertEqual(hookit.waitExit(timeout: 20), 0)
    }

    /// A hookit that dies (SIGKILL) while it follows the loader leaves a process whose next
    /// dlopen goes on by itself: the runtime's send fails or its wait ends (design.md invariant 4).
    func testProcessLoadsLibrariesNormallyAfterHookitIsKilled() throws {
        let target = try TargetProcess("hooktarget")
        let h = try attach(target, ["--count", "libplugin.so:*"])
        kill(h.pid, SIGKILL)
        _ = h.finish(nil)
        XCTAssertEqual(try target.send("load \(plugin)", timeout: 5), "loaded")
        XCTAssertEqual(try target.send("plugcall 2"), "called 2 8401")
        XCTAssertEqual(try target.send("unload"), "unloaded")
        XCTAssertEqual(try target.send("load \(plugin)", timeout: 5), "loaded")
    }

    /// hookit loading a library itself (a --prog library added live) must not wait for its own
    /// answer at the loader's notification.
    func testHookitsOwnLibraryLoadsDoNotStallWhileTheLoaderIsFollowed() throws {
        let target = try TargetProcess("hooktarget")
        let hookit = try TargetProcess(path: Repo.hookit, arguments: ["attach", "\(target.pid)", "--json", "--interactive",
                                                                     "--count", "libplugin.so:*"], waitForReady: false)
        defer { hookit.kill() }
        var line = try hookit.readLine(timeout: 20)
        while !line.contains("\"attached\"") { line = try hookit.readLine(timeout: 20) }
        try hookit.write("add --prog fentry:hooktarget:patch5=\(Repo.target("libprogs.so")):count_entry")
        let added = try hookit.readLine(timeout: 20)
        XCTAssertTrue(added.contains("\"event\":\"added\""), added)
        XCTAssertEqual(try target.send("patch5 1"), "3")
        XCTAssertTrue(try target.send("progs").contains("entry=1"))
        XCTAssertEqual(try target.send("load \(plugin)"), "loaded")
        XCTAssertEqual(try target.send("plugcall 2"), "called 2 8401")
        try hookit.write("detach")
        var all = ""
        while let l = try? hookit.readLine(timeout: 20) { all += l + "\n"; if l.contains("\"detached\"") { break } }
        XCTAssertTrue(all.contains("\"function\":\"libplugin.so:plugin_answer\""), all)
        XCTAssertTrue(all.contains("\"calls\":2,"), all)
    }
}
