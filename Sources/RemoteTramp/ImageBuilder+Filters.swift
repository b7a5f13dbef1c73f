extension ImageBuilder {
    /// Filters one image can keep a decision for (one bit each of the verdict word, below 2^31 so
    /// that each bit is an `or`/`and` immediate).
    static let maxFilters = 31

    /// The --if filters of one image's links, and the code that runs a guarded program.
    ///
    /// A filter decides once per call, in the frame (filterVerdicts: one bit per filter, zeroed at
    /// entry), and every link that carries it follows that decision:
    /// - decided at entry (it tests arguments and tid only): the first of its links in the image's
    ///   order (fentry, fmod_ret, fexit) calls hookit_rt_filter; a call that fails runs none of
    ///   its links, entry or exit;
    /// - decided at exit (it tests `ret` or `ns`): its fentry and fmod_ret links run for every
    ///   call (a trace's entry time, say), and its first fexit link decides for the fexit ones.
    /// `ns` is measured from the TSC the image takes at entry (filterEntryTicks) when a filter
    /// of the image tests it. A skipped fmod_ret program leaves rax 0: the original runs.
    final class FilterGuards {
        private var bits: [ObjectIdentifier: Int32] = [:]
        private var decided: Set<ObjectIdentifier> = []
        private let needsEntryTime: Bool

        init(_ links: [ProgramKind: [Link]]) {
            for kind in [ProgramKind.fentry, .fmodRet, .fexit] {
                for f in (links[kind] ?? []).compactMap(\.filter) where bits[ObjectIdentifier(f)] == nil {
                    precondition(bits.count < maxFilters, "TrampolineTable.checkCanFilter keeps the count")
                    bits[ObjectIdentifier(f)] = 1 << Int32(bits.count)
                }
            }
            needsEntryTime = links.values.joined().contains { $0.filter?.needsEntryTime == true }
        }

        /// At entry, after the ctx is filled: no filter has passed yet; the entry time for `ns`.
        /// Clobbers rax and rdx (saved).
        func emitStart(_ w: X86Writer) {
            guard !bits.isEmpty else { return }
            w.storeImm(0, .rbp, filterVerdicts)
            if needsEntryTime {
                w.rdtsc64()
                w.store(.rax, .rbp, filterEntryTicks)
            } else {
                w.storeImm(0, .rbp, filterEntryTicks)
            }
        }

        /// `run` emits the program's run; around it, the filter's decision (made or followed).
        func guarded(_ w: X86Writer, _ link: Link, _ run: () throws -> Void) rethrows {
            guard let f = link.filter, !(f.decidedAtExit && link.kind != .fexit) else { return try run() }
            let id = ObjectIdentifier(f), bit = bits[id]!, skip = w.newLabel()
            if decided.insert(id).inserted {
                w.lea(.rdi, .rbp, ctx(0))
                w.mov(.rsi, imm: f.program)
                w.load(.rdx, .rbp, filterEntryTicks)
                w.callFar(f.evaluator)
                w.test(.rax, .rax)
                w.jcc(.e, skip)
                w.load(.rax, .rbp, filterVerdicts)
                w.or(.rax, imm: bit)
                w.store(.rax, .rbp, filterVerdicts)
            } else {
                w.load(.rax, .rbp, filterVerdicts)
                w.and(.rax, imm: bit)
                w.jcc(.e, skip)
            }
            try run()
            w.bind(skip)
        }
    }
}
