import XCTest
@testable import RemoteTramp

/// The per-CPU rings' reader: a thread that migrated may have its later event seen first; the
/// reader gives each thread's events out in the order its calls returned.
final class TraceRingOrderTests: XCTestCase {
    private func event(_ tid: UInt32, returnedAt t: UInt64) -> TraceEvent {
        TraceEvent(tid: tid, function: 0, ticks: t - 1, durationTicks: 1, timed: true, args: [], ret: t, strings: [])
    }

    func testAnEventSeenLateStillComesBeforeItsThreadsLaterOne() {
        // Pass 1 sees thread 1's event at 20 (ring B); its event at 10 (ring A) is published
        // just after ring A was read, and shows up in pass 2.
        let (out1, hold1) = TraceRing.release(held: [], fresh: [event(1, returnedAt: 20), event(2, returnedAt: 15)])
        XCTAssertTrue(out1.isEmpty, "nothing from the first pass goes out yet")
        let (out2, hold2) = TraceRing.release(held: hold1, fresh: [event(1, returnedAt: 10), event(1, returnedAt: 30), event(2, returnedAt: 40)])
        XCTAssertEqual(out2.map(\.ret), [10, 15, 20], "thread 1's 10 joins its 20; 30 and 40 wait")
        XCTAssertEqual(hold2.map(\.ret), [30, 40])
        let (out3, hold3) = TraceRing.release(held: hold2, fresh: [])
        XCTAssertEqual(out3.map(\.ret), [30, 40])
        XCTAssertTrue(hold3.isEmpty)
    }
}
