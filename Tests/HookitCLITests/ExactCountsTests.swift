import Foundation
import TestSupport
import XCTest

/// The runtime's per-CPU counts (rseq adds, no locked instruction) stay exact when 8 threads on
/// 2 CPUs call at full speed, are preempted and migrate: what hookit reports equals what the
/// target itself did.
final class ExactCountsTests: XCTestCase {
    private func overrideRun(_ extra: [String]) throws -> (checksum: Int, event: [String: Any]) {
        let target = try TargetProcess("hooktarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--override", "hooktarget:add=7"] + extra)
        try attached(h, target)
        let reply = try target.send("spin 8 20000", timeout: 60).split(separator: " ")
        XCTAssertEqual(reply.first, "spun")
        XCTAssertEqual(reply.count, 3)
        XCTAssertEqual(reply[1], "160000")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(500).description)
        let event = try XCTUnwrap(events(out).first { $0["event"] as? String == "override" }, out.suffix(800).description)
        XCTAssertEqual(try target.send("add 2 3"), "5", "the override is gone")
        return (Int(reply[2]) ?? -1, event)
    }

    func testOverrideCountsEveryCallOfEightThreads() throws {
        let (checksum, event) = try overrideRun([])
        XCTAssertEqual(event["calls"] as? Int, 160_000)
        XCTAssertEqual(event["injected"] as? Int, 160_000)
        XCTAssertEqual(checksum, 7 * 160_000, "every call returned the injected value")
    }

    func testOverrideEveryThirdCallOfEightThreads() throws {
        let (checksum, event) = try overrideRun(["--every", "3"])
        XCTAssertEqual(event["calls"] as? Int, 160_000)
        let injected = try XCTUnwrap(event["injected"] as? Int)
        XCTAssertEqual(injected, 160_000 / 3, "one call in three, counted across all threads")
        // The other calls ran add(i, 1): the checksum is between all-original and all-injected sums.
        XCTAssertNotEqual(checksum, 7 * 160_000)
    }
}
