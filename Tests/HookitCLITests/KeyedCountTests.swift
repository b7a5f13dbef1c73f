import Foundation
import TestSupport
import XCTest

/// `--count --by KEY` counts per key inside the process (bpftrace's @[arg0] = count()), and
/// `--hist argN` histograms an argument's value: what hookit reports equals what the target
/// itself counted.
final class KeyedCountTests: XCTestCase {
    /// "K:CALLS K:CALLS ..." as the target prints it.
    private func pairs(_ reply: String) -> [String: Int] {
        var out: [String: Int] = [:]
        for w in reply.split(separator: " ") {
            let kv = w.split(separator: ":")
            if kv.count == 2 { out[String(kv[0])] = Int(kv[1]) }
        }
        return out
    }

    private func keys(_ events: [[String: Any]], _ function: String) throws -> (keys: [String: Int], event: [String: Any]) {
        let e = try XCTUnwrap(events.first { $0["event"] as? String == "keys" && $0["function"] as? String == function })
        var out: [String: Int] = [:]
        for k in e["keys"] as? [[String: Any]] ?? [] { out["\(k["key"]!)"] = k["count"] as? Int }
        return (out, e)
    }

    func testByArg0CountsEqualTheTargetsOwnAndTopKeepsTheLargest() throws {
        let target = try TargetProcess("filtertarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--count", "filtertarget:pick", "--by", "arg0",
                            "--count", "filtertarget:weigh", "--by", "arg0", "--top", "3"])
        try attached(h, target)
        let own = pairs(try target.send("keys 20000 13"))
        _ = try target.send("mix 100")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(800).description)
        let (counted, event) = try keys(events(out), "filtertarget:pick")
        XCTAssertEqual(counted, own, "per key, key 0 included")
        XCTAssertEqual(event["by"] as? String, "arg0")
        XCTAssertEqual(event["overflow"] as? Int, 0)
        let (top, topEvent) = try keys(events(out), "filtertarget:weigh")
        XCTAssertEqual(top.count, 3)
        XCTAssertEqual(top.values.reduce(0, +) + (topEvent["others"] as? Int ?? 0), 100, "the rows shown and the others add up to the calls")
    }

    func testByCallerNamesTheCallSitesAndByTidTheThreads() throws {
        let target = try TargetProcess("filtertarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--count", "filtertarget:pick", "--by", "caller",
                            "--count", "filtertarget:weigh", "--by", "tid"])
        try attached(h, target)
        XCTAssertEqual(try target.send("callers 30 40"), "callers 30 40")
        let threads = pairs(try target.send("threads 3 100"))
        _ = try target.send("mix 50")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(800).description)
        let (callers, _) = try keys(events(out), "filtertarget:pick")
        XCTAssertEqual(callers.filter { $0.key.hasPrefix("filtertarget:from_a+0x") }.map(\.value), [30], "\(callers)")
        XCTAssertEqual(callers.filter { $0.key.hasPrefix("filtertarget:from_b+0x") }.map(\.value), [40], "\(callers)")
        XCTAssertEqual(callers.filter { $0.key.hasPrefix("filtertarget:work+0x") }.map(\.value), [600], "\(callers)")
        XCTAssertEqual(threads.values.sorted(), [100, 200, 300])
        let (tids, _) = try keys(events(out), "filtertarget:weigh")
        XCTAssertEqual(tids, ["\(target.pid)": 50], "mix runs on the main thread")
    }

    func testHistOfAnArgumentIsItsValuesLog2Histogram() throws {
        let target = try TargetProcess("filtertarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--count", "filtertarget:weigh", "--hist", "arg0"])
        try attached(h, target)
        _ = try target.send("mix 3000")
        let own = pairs(try target.send("sizes 3000"))
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(800).description)
        let s = try XCTUnwrap(events(out).first { $0["event"] as? String == "stats" })
        XCTAssertEqual(s["hist_of"] as? String, "arg0")
        var buckets: [String: Int] = [:]
        for t in s["hist"] as? [[Int]] ?? [] where t.count == 3 {
            buckets["\(t[0] == 0 ? 0 : 64 - UInt64(t[0]).leadingZeroBitCount)"] = t[2]
        }
        XCTAssertEqual(buckets, own, "bucket k: [2^(k-1), 2^k), as the target counts them")
    }
}
