import Glibc
import Injector

/// Where each thread's stack ends, for the stack scans made while the world is stopped
/// (signal frames before a first patch, return addresses before freeing an image).
///
/// /proc/PID/maps is read before the stop (with hundreds of threads it has as many mappings,
/// and parsing it takes milliseconds); a stack pointer found in no mapping of that reading — a
/// thread born since, a main stack that grew — makes it read again, inside the stop.
struct StackExtents {
    let pid: pid_t
    private var maps: [Mapping]
    private var fresh: Bool

    /// Reads the maps now, typically before the world is stopped.
    init(pid: pid_t) {
        self.pid = pid
        self.maps = (try? ProcMaps.read(pid)) ?? []
        self.fresh = false
    }

    /// The mapping holding `sp`, by binary search (the maps are sorted and do not overlap).
    mutating func mapping(containing sp: UInt64) -> Mapping? {
        if let m = Self.find(sp, in: maps) { return m }
        guard !fresh else { return nil }
        maps = (try? ProcMaps.read(pid)) ?? maps
        fresh = true
        return Self.find(sp, in: maps)
    }

    /// The top `limit` bytes of the stack at `sp` (to the end of its mapping), if mapped.
    mutating func range(from sp: UInt64, limit: Int) -> (address: UInt64, count: Int)? {
        guard let m = mapping(containing: sp) else { return nil }
        return (sp, Int(min(m.end - sp, UInt64(limit))) & ~7)
    }

    /// Calls `body` with each aligned 8-byte word of a stack copy, from its lowest address,
    /// until it returns true (found). The conservative scan the retirement and patch checks make.
    static func scanWords(_ stack: [UInt8], _ body: (UInt64) -> Bool) {
        stack.withUnsafeBytes { raw in
            for i in stride(from: 0, to: raw.count & ~7, by: 8) {
                if body(raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) { return }
            }
        }
    }

    private static func find(_ a: UInt64, in maps: [Mapping]) -> Mapping? {
        let i = maps.partitionPoint { $0.start > a }
        return i > 0 && a < maps[i - 1].end ? maps[i - 1] : nil
    }
}
