/// Binary search over sorted arrays: one helper for every sorted table hookit keeps (function
/// extents, mappings, image ranges, patch sites, branch targets).
extension RandomAccessCollection where Index == Int {
    /// The first index whose element is past `key`: the elements must be partitioned, all those
    /// `isPast` rejects first.
    public func partitionPoint(_ isPast: (Element) -> Bool) -> Int {
        var lo = startIndex, hi = endIndex
        while lo < hi {
            let mid = (lo + hi) / 2
            if isPast(self[mid]) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }
}

extension RandomAccessCollection where Index == Int, Element == Range<UInt64> {
    /// The range holding `a`, in ranges sorted by their start that do not overlap.
    public func range(containing a: UInt64) -> Range<UInt64>? {
        let i = partitionPoint { $0.lowerBound > a }
        return i > startIndex && self[i - 1].contains(a) ? self[i - 1] : nil
    }
}

extension Array where Element == UInt8 {
    /// Little-endian bytes, as x86-64 and every format hookit writes want them.
    public static func le(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    public static func le(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    /// Overwrites 4 bytes at `offset` with `v`, little-endian.
    public mutating func put(_ v: UInt32, at offset: Int) {
        for k in 0..<4 { self[offset + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
    }

    /// Overwrites 8 bytes at `offset` with `v`, little-endian.
    public mutating func put(_ v: UInt64, at offset: Int) {
        for k in 0..<8 { self[offset + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
    }
}
