import Injector

/// The entry patches a forked child inherited (issue 17, part 4). fork copies the parent's
/// address space: the child runs the parent's images, whose counters and trace ring are shared
/// memory (so its calls count and trace with the parent's), at the same addresses. hookit
/// notes the parent's live patches at the fork, and at detach restores exactly those bytes in
/// the child; the child's copies of hookit's pages stay mapped (a thread of the child may be
/// inside one; nothing reaches them once the entries are restored).
///
/// Valid for a child of a fork, not of a vfork (that child shares the parent's memory: the
/// parent's own detach restores it), and only until the child execs (then nothing is left).
public struct InheritedPatches: Sendable {
    struct Patch: Sendable { let address: UInt64, patched: [UInt8], original: [UInt8], label: String }
    let patches: [Patch]

    /// Functions patched in the child.
    public var count: Int { patches.count }

    /// Restores every inherited patch in `child`, in one stop of its world; a site that does not
    /// hold the parent's patch any more (the child changed it) is reported and left alone.
    public func restore(in child: Tracee) -> (restored: Int, problems: [String]) {
        guard !patches.isEmpty else { return (0, []) }
        var problems: [String] = []
        do { try child.stopWorld() } catch { return (0, ["process \(child.pid): \(error)"]) }
        defer { try? child.resumeWorld() }
        let current = (try? child.memory.read(ranges: patches.map { ($0.address, $0.patched.count) })) ?? []
        var writes: [TextPoke.Write] = []
        for (i, p) in patches.enumerated() {
            let w = TextPoke.Write(address: p.address, expected: p.patched, new: p.original, function: p.label)
            do { if i < current.count { try w.check(found: current[i]) } } catch { problems.append("process \(child.pid): \(error)"); continue }
            writes.append(w)
        }
        var restored = 0
        do { try TextPoke.pokeAll(child, writes) { _ in restored += 1 } } catch { problems.append("process \(child.pid): \(error)") }
        return (restored, problems)
    }
}

extension TrampolineTable {
    /// The live patches now, as a child forked now inherits them (the loader's included).
    public var inheritedPatches: InheritedPatches {
        var patches = order.compactMap { a -> InheritedPatches.Patch? in
            guard let t = trampolines[a], let image = t.image else { return nil }
            return .init(address: t.site.address, patched: t.patchBytes(for: image), original: t.site.original, label: t.label)
        }
        if let w = loaderWatch, let p = w.inheritedPatch { patches.append(p) }
        return InheritedPatches(patches: patches)
    }
}

extension LoaderWatch {
    var inheritedPatch: InheritedPatches.Patch? {
        .init(address: interface.breakpoint, patched: patch, original: original, label: "the loader's r_brk")
    }
}
