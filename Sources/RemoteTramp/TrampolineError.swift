import Injector

/// Every way attaching a program can fail, with the kernel's meaning where one exists. The
/// tracee is left as it was when one is thrown.
public enum TrampolineError: Error, Equatable, CustomStringConvertible {
    /// -E2BIG: the function already has the maximum number of programs.
    case tooManyPrograms(function: String, limit: Int)
    /// -EBUSY: this very program is already attached to this function with this kind.
    case alreadyAttached(function: String, program: String)
    /// -EBUSY: REPLACE excludes every other kind on a function, both ways.
    case busy(function: String, reason: String)
    /// The entry cannot be patched safely; the reason says why (relocation refused, ...).
    case cannotPatch(function: String, reason: String)
    /// The entry bytes are not the ones in the ELF file: something else patched them.
    case foreignPatch(function: String, address: UInt64, found: [UInt8], expected: [UInt8], what: String)
    /// No free address range within ±2 GiB of the module for a trampoline page.
    case noPageInReach(module: String)
    /// The session's trampoline memory budget is spent.
    case memoryBudget(limit: Int, requested: Int)
    case programNotFound(library: String, symbol: String)
    case runtimeMissing(path: String)
    /// A statically linked program held before its first instruction: no library can go in.
    case staticProgram(library: String)
    case unknownLink(id: Int)
    /// Every per-CPU counter is in use.
    case counterSpace(limit: Int)
    /// A program that cannot run as this kind.
    case unsupported(kind: String, program: String, reason: String)
    /// Libraries the process loads later cannot be followed (no loader interface, an r_brk
    /// function that is not the expected bare `ret`, ...).
    case loaderNotFollowed(reason: String)
    /// A --if expression longer than the runtime's filter programs may be.
    case filterTooLong(instructions: Int, limit: Int)
    /// A --if filter that cannot guard this program (an exit-side test before the call).
    case filterUnsupported(function: String, reason: String)
    /// More filtered attachments on one function than an image can keep decisions for.
    case tooManyFilters(function: String, limit: Int)

    public var description: String {
        switch self {
        case .tooManyPrograms(let f, let n):
            return "\(f) already has \(n) programs, the most one function can have (E2BIG)"
        case .alreadyAttached(let f, let p):
            return "\(p) is already attached to \(f) (EBUSY)"
        case .busy(let f, let r):
            return "\(f) is busy: \(r) (EBUSY)"
        case .cannotPatch(let f, let r):
            return "cannot hook \(f) safely: \(r)"
        case .foreignPatch(let f, let a, let found, let expected, let what):
            return "\(f) at 0x\(String(a, radix: 16)) was already patched by something else (\(what)): found \(hexBytes(found)), the file has \(hexBytes(expected)); refusing to overwrite it"
        case .noPageInReach(let m):
            return "no free address range within ±2 GiB of \(m) for a trampoline page"
        case .memoryBudget(let limit, let req):
            return "the trampoline memory budget of \(limit) bytes is spent (needed \(req) more)"
        case .programNotFound(let lib, let sym):
            return "\(lib) has no symbol \(sym)"
        case .runtimeMissing(let path):
            return "the hookit runtime library is missing at \(path)"
        case .staticProgram(let library):
            return "the program is statically linked, so \(library) cannot be loaded into it (a static program has no dynamic loader): hookit run gives it the built-in count only (--count counts calls without time, --prog KIND:PATTERN=count); --trace, --override and C programs need a dynamically linked program"
        case .unknownLink(let id):
            return "no hook with id \(id)"
        case .counterSpace(let limit):
            return "all \(limit) per-CPU counters of this session are in use; hook fewer functions at once"
        case .loaderNotFollowed(let reason):
            return "libraries loaded later cannot be followed: \(reason)"
        case .unsupported(let kind, let program, let reason):
            return "\(program) cannot run as \(kind): \(reason)"
        case .filterTooLong(let n, let limit):
            return "the --if expression compiles to \(n) instructions, more than the \(limit) a filter may have; split it"
        case .filterUnsupported(let f, let r):
            return "cannot filter at \(f): \(r)"
        case .tooManyFilters(let f, let limit):
            return "\(f) already has \(limit) filtered hooks, the most one function can have; remove one first"
        }
    }
}

func hexBytes(_ b: [UInt8]) -> String {
    b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
}

extension TrampolineError {
    /// Why one function of a pattern is refused, when it is refused rather than failing the
    /// whole change: its entry cannot be patched safely, or someone else patched it.
    public var refusalReason: String? {
        switch self {
        case .cannotPatch(_, let reason): return reason
        case .foreignPatch: return "\(self)"
        default: return nil
        }
    }
}
