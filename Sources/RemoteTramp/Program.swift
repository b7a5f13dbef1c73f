import Injector

/// The four kinds of attachment, as in the seed (BPF_TRAMP_FENTRY, _FEXIT, _MODIFY_RETURN,
/// _REPLACE).
public enum ProgramKind: String, CaseIterable, Sendable {
    case fentry, fexit
    case fmodRet = "fmod_ret"
    case replace
}

/// What runs for a link.
public enum ProgramCode: Equatable, Sendable {
    /// The built-in counter: machine code in the image, no library needed (static tracees too).
    case count
    /// A C function `uint64_t NAME(struct hookit_ctx *)` in a library loaded into the tracee.
    /// For `replace`, a function with the hooked function's signature.
    case user(library: String, symbol: String, address: UInt64)
    /// One of hookit's own programs in libhookit_rt.so (trace, timing, fault injection). They
    /// are built to use general registers only, so their images need no XSAVE.
    case runtime(symbol: String, address: UInt64)

    public var name: String {
        switch self {
        case .count: return "count"
        case .user(let lib, let sym, _): return "\(lib):\(sym)"
        case .runtime(let sym, _): return sym
        }
    }
}

/// One program attached to one function (the seed's bpf_tramp_link).
public final class Link {
    public let id: Int
    public let kind: ProgramKind
    public let code: ProgramCode
    public let cookie: UInt64
    public let function: FunctionSymbol
    /// User programs: struct hookit_rt_stats in the tracee (calls, nsecs, misses).
    let statsAddress: UInt64?
    /// The built-in count: its per-CPU counter.
    let counter: Int?
    /// A replacement: the registers its image gives back as they were at the call, because the
    /// replacement may change them and the original does not (see RegisterUse). Empty: the image
    /// is a bare `jmp` (proven needless, or asked for with a raw replace).
    public internal(set) var givesBack: RegisterSet = []
    /// A user program that may change vector, x87 or mask state (or MXCSR), read from its code
    /// and call graph as an upper bound (RegisterUse): its image saves that state around it with
    /// XSAVE/XRSTOR. A program proven to use general registers only (built with
    /// -mgeneral-regs-only, say) runs without. hookit's runtime programs never do.
    public internal(set) var changesVectorState = false
    /// --if: the program runs only for the calls the filter passes (see CallFilter).
    public internal(set) var filter: CallFilter?

    init(id: Int, kind: ProgramKind, code: ProgramCode, cookie: UInt64, function: FunctionSymbol,
         statsAddress: UInt64?, counter: Int?) {
        self.id = id
        self.kind = kind
        self.code = code
        self.cookie = cookie
        self.function = function
        self.statsAddress = statsAddress
        self.counter = counter
    }
}

/// A link's statistics, read from the tracee.
public struct LinkStats: Sendable, Equatable {
    public var calls: UInt64
    public var nsecs: UInt64
    public var misses: UInt64

    public init(calls: UInt64, nsecs: UInt64, misses: UInt64) {
        self.calls = calls
        self.nsecs = nsecs
        self.misses = misses
    }
}
