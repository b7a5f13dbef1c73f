import Foundation
import TestSupport
import XCTest

/// --stack and --count --by stack against stacktarget, a PIE built without frame pointers
/// (-O2 -fomit-frame-pointer, rbp used as a general register): its callers can only be found
/// from .eh_frame, over the stack bytes the process copied at each call.
final class CallStackTests: XCTestCase {
    /// `module:function` of each frame (the offsets vary with the compiler).
    private func names(_ stack: [String]) -> [String] {
        stack.map { $0.hasPrefix("[") ? $0 : String($0[..<($0.range(of: "+0x")?.lowerBound ?? $0.endIndex)]) }
    }

    private func temporary(_ name: String) -> String { NSTemporaryDirectory() + "hookit-\(name)-\(getpid())" }

    func testATracedCallCarriesItsCallersThreeDeepInJSONTextAndTheChromeTrace() throws {
        let target = try TargetProcess("stacktarget")
        let chrome = temporary("stack.json")
        defer { unlink(chrome) }
        let h = Background(["attach", "\(target.pid)", "--json", "--trace", "stacktarget:leaf", "--stack", "--output", chrome])
        try attached(h, target)
        XCTAssertEqual(try target.send("a 2"), "2")
        XCTAssertEqual(try target.send("b 1"), "1")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(800).description)
        let calls = events(out).filter { $0["event"] as? String == "call" }
        XCTAssertEqual(calls.count, 3, out.suffix(1500).description)
        let stacks = calls.map { names($0["stack"] as? [String] ?? []) }
        for (stack, path) in zip(stacks, ["a", "a", "b"]) {
            XCTAssertEqual(Array(stack.prefix(4)), ["stacktarget:leaf", "stacktarget:middle_\(path)", "stacktarget:outer_\(path)", "stacktarget:main"],
                           out.suffix(1500).description)
            // Unwound to the outermost frame: the stack ends at _start, not at [unknown].
            XCTAssertEqual(stack.last, "stacktarget:_start", "\(stack)")
        }
        XCTAssertEqual(try target.send("total"), "3", "the target runs on")
        let trace = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: chrome))) as? [String: Any]
        let slices = (trace?["traceEvents"] as? [[String: Any]] ?? []).filter { $0["ph"] as? String == "X" }
        XCTAssertEqual(slices.compactMap { (($0["args"] as? [String: Any])?["stack"] as? [String]).map(names) }, stacks)
    }

    /// A thread's stack lies below its thread pointer (glibc's struct pthread tops the stack
    /// block); its outermost frame is clone3's.
    func testACallOnAnotherThreadIsUnwoundToTheThreadsStart() throws {
        let target = try TargetProcess("stacktarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--trace", "stacktarget:leaf", "--stack"])
        try attached(h, target)
        XCTAssertEqual(try target.send("thread 2"), "2")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(800).description)
        let calls = events(out).filter { $0["event"] as? String == "call" }
        XCTAssertEqual(calls.count, 2, out.suffix(1500).description)
        for c in calls {
            let stack = names(c["stack"] as? [String] ?? [])
            XCTAssertNotEqual(c["tid"] as? Int, Int(target.pid), "on the new thread")
            XCTAssertEqual(Array(stack.prefix(4)), ["stacktarget:leaf", "stacktarget:middle_a", "stacktarget:outer_a", "stacktarget:on_thread"], "\(stack)")
            XCTAssertFalse(stack.contains("[unknown]"), "\(stack)")
            XCTAssertTrue(stack.last?.hasPrefix("libc.so.6:") ?? false, "\(stack)")
        }
    }

    func testTheTextTraceListsTheFramesUnderTheCall() throws {
        let target = try TargetProcess("stacktarget")
        let h = Background(["attach", "\(target.pid)", "--trace", "stacktarget:leaf", "--stack"])
        try attached(h, target)
        XCTAssertEqual(try target.send("b 1"), "1")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(800).description)
        let lines = out.split(separator: "\n").map(String.init)
        guard let call = lines.firstIndex(where: { $0.contains("stacktarget:leaf(") }), call + 3 < lines.count else {
            return XCTFail(out)
        }
        let frames = lines[(call + 1)...(call + 3)].map { $0.trimmingCharacters(in: .whitespaces) }
        XCTAssertEqual(names(frames), ["stacktarget:leaf", "stacktarget:middle_b", "stacktarget:outer_b"], out)
        XCTAssertTrue(lines[call + 1].hasPrefix("    "), "frames are indented under the call")
    }

    func testAStackDeeperThanTheCopyEndsWithUnknown() throws {
        let target = try TargetProcess("stacktarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--trace", "stacktarget:leaf", "--stack"])
        try attached(h, target)
        // 40 frames of 512 bytes: far more than the few KiB copied at the call.
        XCTAssertEqual(try target.send("deep 40"), "40")
        XCTAssertEqual(try target.send("a 1"), "1", "the target runs on")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(800).description)
        let stacks = events(out).filter { $0["event"] as? String == "call" }.map { names($0["stack"] as? [String] ?? []) }
        XCTAssertEqual(stacks.count, 2, out.suffix(1500).description)
        let deep = stacks.first ?? []
        XCTAssertEqual(deep.first, "stacktarget:leaf")
        XCTAssertEqual(deep.last, "[unknown]", "\(deep)")
        let unwound = deep.dropFirst().prefix { $0 == "stacktarget:deep" }.count
        XCTAssertGreaterThanOrEqual(unwound, 3, "\(deep)")
        XCTAssertEqual(unwound, deep.count - 2, "every frame between leaf and [unknown] is deep: \(deep)")
    }

    func testFoldedStacksAddUpToTheCallsTheTargetMade() throws {
        let target = try TargetProcess("stacktarget")
        let folded = temporary("folded.txt"), svg = temporary("flame.svg")
        defer { unlink(folded); unlink(svg) }
        let h = Background(["attach", "\(target.pid)", "--json", "--count", "stacktarget:leaf", "--by", "stack",
                            "--folded", folded, "--flamegraph", svg])
        try attached(h, target)
        XCTAssertEqual(try target.send("a 30"), "30")
        XCTAssertEqual(try target.send("b 20"), "20")
        XCTAssertEqual(try target.send("a 7"), "37")
        let total = try target.send("total")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(800).description)
        let lines = try String(contentsOfFile: folded, encoding: .utf8).split(separator: "\n")
        var byStack: [String: Int] = [:]
        for l in lines {
            guard let space = l.lastIndex(of: " "), let n = Int(l[l.index(after: space)...]) else { return XCTFail("bad line \(l)") }
            byStack[String(l[..<space])] = n
        }
        XCTAssertEqual(byStack.values.reduce(0, +), Int(total), "\(byStack)")
        let a = byStack.first { $0.key.hasSuffix(";stacktarget:main;stacktarget:outer_a;stacktarget:middle_a;stacktarget:leaf") }
        let b = byStack.first { $0.key.hasSuffix(";stacktarget:main;stacktarget:outer_b;stacktarget:middle_b;stacktarget:leaf") }
        XCTAssertEqual(a?.value, 37, "\(byStack)")
        XCTAssertEqual(b?.value, 20, "\(byStack)")
        XCTAssertTrue(a?.key.hasPrefix("stacktarget:_start;") ?? false, "outermost first: \(byStack)")
        let counted = events(out).first { $0["event"] as? String == "stats" && $0["function"] as? String == "stacktarget:leaf" }
        XCTAssertEqual(counted?["calls"] as? Int, Int(total))
        let picture = try String(contentsOfFile: svg, encoding: .utf8)
        XCTAssertTrue(picture.hasPrefix("<?xml"), picture.prefix(200).description)
        XCTAssertTrue(picture.contains("stacktarget:middle_a (37 call(s)"), picture.prefix(2000).description)
        XCTAssertTrue(picture.contains("stacktarget:middle_b (20 call(s)"))
    }

    func testStackOptionsWithoutWhatTheyNeedAreRefusedBeforeAttaching() throws {
        let target = try TargetProcess("stacktarget")
        for (args, message) in [(["--count", "stacktarget:leaf", "--stack"], "--stack gives each traced call its stack"),
                                (["--count", "stacktarget:leaf", "--by", "stack"], "give --folded FILE or --flamegraph"),
                                (["--count", "stacktarget:leaf", "--by", "tid2", "--folded", "/tmp/x"], "--by 'tid2': unknown key"),
                                (["--trace", "stacktarget:leaf", "--folded", "/tmp/x"], "give --by stack")] {
            let r = runProgram([Repo.hookit, "attach", "\(target.pid)"] + args + ["--duration", "1"])
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        XCTAssertEqual(try target.send("a 1"), "1", "the target was left alone")
        XCTAssertEqual(try target.send("total"), "1")
    }
}
