import Glibc
import Injector

/// When may an image (or a relocated prologue) be freed? The seed waits for RCU-tasks and the
/// image's percpu_ref; in another process hookit checks, once nothing reaches the image any
/// more, for each thread (stopped on its own, or with the world):
///   1. no thread's PC is inside it;
///   2. its in-flight counter is zero: no thread is inside a program or inside the original
///      called from it (the counter is raised at the image's entry, lowered at its exit);
///   3. no thread's stack holds a word pointing into it — a conservative scan of each stack
///      from rsp to the end of its mapping, which also sees return addresses that a counter
///      cannot (a relocated `call` in a prologue, a frame left by longjmp).
/// Anything that fails a check is busy; it stays mapped until a later check passes.
///
/// Holds the retired images (the seed's bpf_tramp_image_put queue) until they are freed.
final class ImageRetirement {
    static let stackScanLimit = 512 * 1024

    private(set) var images: [Image] = []

    /// An image that no entry reaches any more. Threads may still be inside it, or inside the
    /// original called from it; its after-call site is patched to jump straight to its epilogue
    /// (the seed's ip_after_call -> ip_epilogue), so such a thread skips the fexit programs of a
    /// list that has changed. Needs the world stopped.
    func retire(_ image: Image, tracee: Tracee) {
        if let site = image.afterCall, let epilogue = image.epilogue {
            try? TextPoke.poke(tracee, at: site, expected: PatchSite.nop5, new: EntryPatch.jmp(from: site, to: epilogue),
                               function: "retired image 0x\(String(image.address, radix: 16))")
        }
        images.append(image)
    }

    /// An image whose entry was restored (detach): nothing to patch, only to wait for.
    func add(_ image: Image) { images.append(image) }

    /// Each retired image's range with the current sum of its in-flight counter.
    func inflight(_ counters: PerCPUCounters) -> [(Range<UInt64>, Int64)] {
        images.compactMap { i in i.inflightCounter.map { (i.range, counters.read($0) ?? 1) } }
    }

    /// Takes out and returns the images no thread can be in any more (PC, in-flight count,
    /// stack); the others stay for a later call.
    func collect(tracee: Tracee, counters: PerCPUCounters, stacks: inout StackExtents,
                 threads: (pcs: [pid_t: UInt64], sps: [pid_t: UInt64])?) -> [Image] {
        guard !images.isEmpty else { return [] }
        let busy = Set(Self.busyRanges(images.map(\.range), inflight: inflight(counters), tracee: tracee,
                                       stacks: &stacks, threads: threads))
        let free = images.filter { !busy.contains($0.range) }
        images.removeAll { !busy.contains($0.range) }
        return free
    }

    /// Takes out every image (detach, once none is busy).
    func takeAll() -> [Image] {
        defer { images.removeAll() }
        return images
    }

    /// `inflight`: each image's range with the current sum of its in-flight counter.
    /// `threads`: every thread's PC and stack pointer, when the caller read them in the stop it
    /// holds (one PTRACE_GETREGS per thread per stop); nil to read them here.
    static func busyRanges(_ ranges: [Range<UInt64>], inflight: [(Range<UInt64>, Int64)], tracee: Tracee,
                           stacks: inout StackExtents, threads: (pcs: [pid_t: UInt64], sps: [pid_t: UInt64])? = nil) -> [Range<UInt64>] {
        guard !ranges.isEmpty else { return [] }
        let sorted = ranges.sorted { $0.lowerBound < $1.lowerBound }
        let low = sorted.first!.lowerBound, high = ranges.map(\.upperBound).max()!
        func owner(_ v: UInt64) -> Range<UInt64>? { v >= low && v < high ? sorted.range(containing: v) : nil }
        var busy = Set<Range<UInt64>>()
        for (range, count) in inflight where count != 0 { busy.insert(range) }
        // Once an entry no longer reaches an image, a thread found outside it (PC and stack)
        // cannot get back in: so each thread may be checked in a stop of its own.
        var unknown = false
        func check(pc: UInt64, sp: UInt64) {
            if let r = owner(pc) { busy.insert(r) }
            guard let (_, length) = stacks.range(from: sp, limit: stackScanLimit),
                  let words = try? tracee.memory.read(at: sp, count: length) else { return }
            StackExtents.scanWords(words) { v in
                if let r = owner(v) { busy.insert(r) }
                return false
            }
        }
        if let t = threads {
            for (tid, pc) in t.pcs { check(pc: pc, sp: t.sps[tid] ?? 0) }
        } else {
            try? tracee.forEachThreadStopped { _, r in
                guard let regs = r else { unknown = true; return }
                check(pc: regs.rip, sp: regs.rsp)
            }
        }
        // A thread hookit could not look at (group-stopped) may be anywhere.
        if unknown { return ranges }
        return ranges.filter { busy.contains($0) }
    }
}
