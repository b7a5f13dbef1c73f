import XCTest
@testable import RemoteTramp

/// The per-CPU rings' reader: a thread that migrated may have its later event seen first, or its
/// earlier one behind a slot another writer has not published; each thread's events still come
/// out in the order its calls returned, by the number each carries.
final class TraceRingOrderTests: XCTestCase {
    private func event(_ tid: UInt32, _ seq: UInt64) -> TraceEvent {
        TraceEvent(kind: .end, tid: tid, function: 0, ticks: seq * 10, stackPointer: 0, args: [], ret: seq, strings: [],
                   sequence: seq)
    }

    func testALaterEventWaitsForItsThreadsEarlierOne() {
        var order = ThreadOrder()
        order.add([event(1, 2), event(2, 1)])
        XCTAssertEqual(order.release().map(\.ret), [1], "thread 2's first goes out; thread 1's second waits for its first")
        order.add([event(1, 1)])
        XCTAssertEqual(order.release().map(\.ret), [1, 2])
        order.add([event(2, 3)])
        XCTAssertEqual(order.release().map(\.ret), [], "thread 2's 3 waits for its 2")
        order.add([event(2, 2), event(2, 1)])      // 1 again: a new thread that reuses the id
        XCTAssertEqual(order.release().map(\.ret), [1, 2, 3])
        XCTAssertEqual(order.waitingCount, 0)
    }

    func testAnEventLostForGoodIsGivenUpAfterAWhileOrAtTheEnd() {
        var order = ThreadOrder()
        order.add([event(7, 1)])
        XCTAssertEqual(order.release().map(\.ret), [1])
        order.add([event(7, 3)])      // 2 was reserved and never published
        for _ in 0..<ThreadOrder.patience { XCTAssertEqual(order.release().count, 0) }
        XCTAssertEqual(order.release().map(\.ret), [3], "given up on 2 after patience passes")
        order.add([event(7, 5)])
        XCTAssertEqual(order.release(all: true).map(\.ret), [5], "the last drain lets everything out")
    }

    /// Across threads the events go out in time order; within one, always in its own order, even
    /// when a time stamp says otherwise (another CPU's clock, an entry written at the return).
    func testEventsInterleaveByTimeKeepingEachThreadsOwnOrder() {
        var order = ThreadOrder()
        var late = event(1, 1), early = event(1, 2), other = event(2, 1)
        late.ticks = 50; early.ticks = 10; other.ticks = 30
        order.add([other, early, late])
        let out = order.release()
        XCTAssertEqual(out.map(\.tid), [1, 2, 1])
        XCTAssertEqual(out.filter { $0.tid == 1 }.map(\.sequence), [1, 2])
    }
}
