import CPtrace
import Injector

/// Direct branches into a module's code, by target. The bytes a patch displaces must not be
/// the target of any branch but at their first byte — and not only from the function itself:
/// hand-written code jumps into other functions (glibc's __mempcpy_avx512_unaligned_erms ends
/// with a `jmp` three bytes into __memmove_avx512_unaligned_erms). A linear sweep of the
/// module's executable segments (from the ELF file) finds them; a byte sequence that only
/// looks like a branch makes a refusal, never a wrong patch.
enum IncomingBranches {
    struct Branch { let target: UInt64, source: UInt64 }

    /// Per module file: branches sorted by target (link-time addresses).
    nonisolated(unsafe) private static var cache: [String: [Branch]] = [:]

    /// A branch from outside `range` (tracee addresses) whose target lies strictly inside it.
    static func into(_ range: Range<UInt64>, of function: Range<UInt64>, module: Module) -> (source: UInt64, target: UInt64)? {
        let branches = sweep(module)
        let lo = range.lowerBound &- module.bias + 1, hi = range.upperBound &- module.bias
        guard lo < hi else { return nil }
        var i = lowerBound(branches, lo)
        while i < branches.count, branches[i].target < hi {
            let source = branches[i].source &+ module.bias
            if !function.contains(source) { return (source, branches[i].target &+ module.bias) }
            i += 1
        }
        return nil
    }

    private static func lowerBound(_ b: [Branch], _ target: UInt64) -> Int { b.partitionPoint { $0.target >= target } }

    private static func sweep(_ module: Module) -> [Branch] {
        let key = "\(module.path)@\(module.bias)"
        if let b = cache[key] { return b }
        var out: [Branch] = []
        for seg in module.programHeaders where seg.isLoad && seg.isExecutable && seg.filesz > 0 {
            guard let code = module.fileBytes(at: module.bias &+ seg.vaddr, count: Int(seg.filesz)) else { continue }
            let max = code.count / 2 + 1
            var targets = [UInt64](repeating: 0, count: max), sources = [UInt64](repeating: 0, count: max)
            let n = code.withUnsafeBufferPointer { hk_branch_targets($0.baseAddress, code.count, seg.vaddr, &targets, &sources, max) }
            for i in 0..<n { out.append(Branch(target: targets[i], source: sources[i])) }
        }
        out.sort { $0.target < $1.target }
        cache[key] = out
        return out
    }
}
