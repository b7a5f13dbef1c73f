import CPtrace
import Injector

/// One frame of an unwound stack: where it is, by module and function.
public struct StackFrame: Sendable, Equatable {
    public var pc: UInt64
    /// nil: the pc is in no module hookit knows.
    public var module: String?
    /// nil: no function symbol covers the pc (then `offset` is from the module's bias).
    public var function: String?
    public var offset: UInt64

    /// `module:function+0xOFF`, `module+0xOFF`, or `0xPC`.
    public var text: String {
        guard let module else { return "0x" + String(pc, radix: 16) }
        return "\(module)" + (function.map { ":\($0)" } ?? "") + "+0x" + String(offset, radix: 16)
    }

    /// `module:function` (what a flame graph merges on), else as `text`.
    public var name: String {
        guard let module, let function else { return text }
        return "\(module):\(function)"
    }
}

/// A copied stack unwound: frames innermost first (the hooked function, its caller, ...), and
/// whether the walk reached the outermost frame. A walk that stops early (the copy ended, a
/// frame without CFI or frame pointer) is not complete: its report ends with `[unknown]`.
public struct UnwoundStack: Sendable {
    public var frames: [StackFrame]
    public var complete: Bool
}

/// Unwinds copied stacks offline with libdw, the way perf's --call-graph dwarf does: each
/// module's .eh_frame (or a debug file's .debug_frame), frame pointers where a module has no
/// CFI. The modules are those of one SymbolTable; a new table (a library loaded later) needs a
/// new unwinder.
public final class StackUnwinder {
    private let handle: OpaquePointer?
    public let symbols: SymbolTable
    private let modules: [Module]
    /// Frames kept per stack (the copy holds about 4 KiB, rarely more than 60 frames).
    public static let maxFrames = 128

    public init(symbols: SymbolTable) {
        self.symbols = symbols
        modules = symbols.modules.filter { !$0.isVDSO }.sorted { $0.start < $1.start }
        handle = hk_unwinder_new(symbols.pid, DebugFile.directory)
        guard let handle else { return }
        for m in modules {
            if case .file(let path) = m.source { _ = hk_unwinder_add(handle, m.name, path, m.bias) }
        }
        _ = hk_unwinder_ready(handle)
    }

    deinit { hk_unwinder_free(handle) }

    public func unwind(_ s: StackSample) -> UnwoundStack {
        guard let handle, let rbp = s.entryRBP else {
            return UnwoundStack(frames: [frame(s.ip, exact: true)], complete: false)
        }
        var pcs = [UInt64](repeating: 0, count: Self.maxFrames)
        var complete: Int32 = 0
        let n = s.bytes.withUnsafeBufferPointer { b in
            hk_unwind(handle, Int32(bitPattern: s.tid), s.ip, s.entrySP, rbp, s.base, b.baseAddress, b.count,
                      &pcs, Int32(Self.maxFrames), &complete)
        }
        let frames = pcs.prefix(Int(n)).enumerated().map { frame($0.element, exact: $0.offset == 0) }
        return UnwoundStack(frames: frames, complete: complete != 0)
    }

    /// The frame of `pc`: the innermost frame's pc is exact; a caller's is a return address,
    /// looked up one byte back (a call that ends a function returns past its end).
    func frame(_ pc: UInt64, exact: Bool) -> StackFrame {
        let key = pc << 1 | (exact ? 1 : 0)
        if let f = frames[key] { return f }
        let f = lookUp(pc, exact: exact)
        frames[key] = f
        return f
    }

    /// Frames already symbolized, by pc (and whether it is exact).
    private var frames: [UInt64: StackFrame] = [:]

    private func lookUp(_ pc: UInt64, exact: Bool) -> StackFrame {
        guard let l = symbols.location(of: pc, returnAddress: !exact) else { return StackFrame(pc: pc, module: nil, function: nil, offset: 0) }
        return StackFrame(pc: pc, module: l.module, function: l.function, offset: l.offset)
    }
}
