import Injector

/// Code written to the tracee in batches: allocations in a page are contiguous, so one pwrite
/// covers many images (thousands of functions cost a few writes, not thousands).
final class CodeBatch {
    private var pending: [(address: UInt64, bytes: [UInt8])] = []

    /// Queues code, padded with int3 to its whole allocation so neighbouring allocations form
    /// one contiguous run.
    func queue(_ bytes: [UInt8], at address: UInt64, size: Int) {
        let granule = Int(CodeAllocator.granule)
        let padded = (size + granule - 1) / granule * granule
        pending.append((address, bytes + [UInt8](repeating: 0xCC, count: max(0, padded - bytes.count))))
    }

    /// Forgets queued code at `address` (its allocation went back unused).
    func drop(at address: UInt64) { pending.removeAll { $0.address == address } }

    /// Writes the queued code, one pwrite per contiguous run (through /proc/PID/mem: the pages
    /// are r-x). Runs before any poke can make the code reachable.
    func flush(to memory: RemoteMemory) throws {
        pending.sort { $0.address < $1.address }
        var i = 0
        while i < pending.count {
            var run = pending[i].bytes
            let start = pending[i].address
            var j = i + 1
            while j < pending.count, pending[j].address == start + UInt64(run.count), run.count < 1 << 20 {
                run += pending[j].bytes
                j += 1
            }
            try memory.writeForced(run, at: start)
            i = j
        }
        pending.removeAll()
    }
}
