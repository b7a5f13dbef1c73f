import Foundation
import TestSupport
import XCTest

/// String arguments are copied in the tracee without a fault: with plain loads from memory that
/// is never unmapped (a literal of the executable), through process_vm_readv elsewhere (the heap,
/// the stack), and a bad pointer is reported, not followed.
final class TraceStringTests: XCTestCase {
    func testLiteralsHeapAndStackStringsAreCopiedAndTruncatedAlike() throws {
        let target = try TargetProcess("hooktarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--trace", "hooktarget:greet", "--sig", "greet(str) -> long"])
        try attached(h, target)
        XCTAssertEqual(try target.send("greetlit"), "95 3")
        XCTAssertEqual(try target.send("greetheap"), "11")
        XCTAssertEqual(try target.send("greet stackname"), "9")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(500).description)
        let calls = events(out).filter { $0["event"] as? String == "call" }
        let strings = calls.compactMap { ($0["strings"] as? [Any])?.first as? String ?? ($0["args"] as? [Any])?.first as? String }
        let literal = "The quick brown fox jumps over the lazy dog; the quick brown fox jumps over the lazy dog again."
        XCTAssertEqual(strings, [String(literal.prefix(75)), "fox", "on the heap", "stackname"], out.suffix(1500).description)
        XCTAssertEqual(calls.compactMap { $0["ret"] as? Int }, [95, 3, 11, 9])
    }

    /// A value traced as a string that is no readable pointer: the copy's failed system call
    /// (process_vm_readv, EFAULT) is the runtime's own and leaves the thread's errno alone.
    func testAnUnreadableStringLeavesErrnoAlone() throws {
        let target = try TargetProcess("hooktarget")
        let h = Background(["attach", "\(target.pid)", "--json", "--trace", "hooktarget:fallible", "--sig", "fallible(str) -> long"])
        try attached(h, target)
        XCTAssertEqual(try target.send("fallible 1234567 3"), "2469134 0 0", "result, errno 0, no failure")
        let (status, out) = h.finish()
        XCTAssertEqual(status, 0, out.suffix(500).description)
        let calls = events(out).filter { $0["event"] as? String == "call" }
        XCTAssertEqual(calls.count, 3)
        XCTAssertEqual((calls.first?["args"] as? [Any])?.first as? Int, 1234567, "an unreadable pointer is shown as its value")
    }
}
