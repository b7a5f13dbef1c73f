/// The shape both shared-memory rings have (rt_ring.h: trace.c's events, stack.c's stack
/// copies): `rings` rings of `stride` bytes, one per CPU when the process has rseq (else one),
/// each a 4 KiB header (magic, capacity, slot size, rings, stride; head at 64, dropped at 128)
/// then `capacity` slots.
struct RingGeometry {
    static let headerSize = 4096
    let rings: Int
    /// Slots per ring: a power of two, at least `minimum`, all rings' at most `totalSlots`.
    let capacity: Int
    let slotSize: Int
    var stride: Int { Self.headerSize + capacity * slotSize }
    var bytes: Int { rings * stride }

    init(table: TrampolineTable, totalSlots: Int, minimum: Int, slotSize: Int) {
        rings = table.cells.cpuIDOffset == nil ? 1 : table.cells.cpus
        var c = minimum
        while c * 2 * rings <= totalSlots { c *= 2 }
        capacity = c
        self.slotSize = slotSize
    }

    /// Writes the first ring's header, which the runtime reads for all.
    func writeHeader(_ local: UnsafeMutableRawPointer, magic: UInt64) {
        let words = local.assumingMemoryBound(to: UInt64.self)
        words[0] = magic
        words[1] = UInt64(capacity)
        words[2] = UInt64(slotSize)
        words[3] = UInt64(rings)
        words[4] = UInt64(stride)
    }

    func header(_ local: UnsafeMutableRawPointer, _ r: Int) -> UnsafeMutablePointer<UInt64> {
        (local + r * stride).assumingMemoryBound(to: UInt64.self)
    }

    func slot(_ local: UnsafeMutableRawPointer, _ r: Int, _ p: UInt64) -> UnsafeMutablePointer<UInt64> {
        (local + r * stride + Self.headerSize + Int(p & UInt64(capacity - 1)) * slotSize).assumingMemoryBound(to: UInt64.self)
    }

    var lapMask: UInt64 { ~UInt64(capacity - 1) }

    /// Reads the published slots, ring by ring from `tails`, at most about `max`, each handed
    /// back to the next lap once decoded (see rt_ring.h's turns). A slot reserved and still
    /// being written ends its ring's batch. `publishingTail`: the reader's position goes into
    /// the ring's header (at 200), for writers that keep room ahead of it.
    func consume<T>(_ local: UnsafeMutableRawPointer, tails: inout [UInt64], max: Int, publishingTail: Bool,
                    _ decode: (UnsafeMutablePointer<UInt64>) -> T) -> [T] {
        var out: [T] = []
        for r in 0..<rings {
            while out.count < max {
                let s = slot(local, r, tails[r])
                let lap = tails[r] & lapMask
                guard atomicLoad(s) == lap + 1 else { break }
                out.append(decode(s))
                atomicStore(s, lap + UInt64(capacity))
                tails[r] += 1
            }
            if publishingTail { atomicStore(header(local, r) + 25, tails[r]) }
        }
        return out
    }
}
