import Glibc
import Injector

/// When may an image (or a relocated prologue) be freed? The seed waits for RCU-tasks and the
/// image's percpu_ref; in another process hookit checks, with every thread stopped:
///   1. no thread's PC is inside it;
///   2. its in-flight counter is zero: no thread is inside a program or inside the original
///      called from it (the counter is raised at the image's entry, lowered at its exit);
///   3. no thread's stack holds a word pointing into it — a conservative scan of each stack
///      from rsp to the end of its mapping, which also sees return addresses that a counter
///      cannot (a relocated `call` in a prologue, a frame left by longjmp).
/// Anything that fails a check is busy; it stays mapped until a later check passes.
enum ImageRetirement {
    static let stackScanLimit = 512 * 1024

    /// `inflight`: each image's range with the current sum of its in-flight counter.
    static func busyRanges(_ ranges: [Range<UInt64>], inflight: [(Range<UInt64>, Int64)], tracee: Tracee,
                           stacks: inout StackExtents) -> [Range<UInt64>] {
        guard !ranges.isEmpty else { return [] }
        let sorted = ranges.sorted { $0.lowerBound < $1.lowerBound }
        let low = sorted.first!.lowerBound, high = ranges.map(\.upperBound).max()!
        /// The range holding v, by binary search (the ranges do not overlap).
        func owner(_ v: UInt64) -> Range<UInt64>? {
            guard v >= low && v < high else { return nil }
            var lo = 0, hi = sorted.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if sorted[mid].lowerBound <= v { lo = mid + 1 } else { hi = mid }
            }
            return lo > 0 && sorted[lo - 1].contains(v) ? sorted[lo - 1] : nil
        }
        var busy = Set<Range<UInt64>>()
        for (range, count) in inflight where count != 0 { busy.insert(range) }
        for tid in tracee.threadIDs {
            guard let regs = try? tracee.registers(of: tid) else { continue }
            if let r = owner(regs.rip) { busy.insert(r) }
            guard let (_, length) = stacks.range(from: regs.rsp, limit: stackScanLimit) else { continue }
            guard let words = try? tracee.memory.read(at: regs.rsp, count: length) else { continue }
            words.withUnsafeBytes { raw in
                for i in stride(from: 0, to: length, by: 8) {
                    let v = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    if let r = owner(v) { busy.insert(r) }
                }
            }
        }
        return ranges.filter { busy.contains($0) }
    }
}
