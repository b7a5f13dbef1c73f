import Glibc

/// The dynamic loader's debugger interface (<link.h>'s `struct r_debug`, which ld.so exports as
/// `_r_debug`): r_brk is the function the loader calls at every change of its list of objects,
/// r_state says which change. Reading it needs no stop.
public struct LoaderInterface: Sendable {
    /// What the loader is doing, as r_debug.r_state says (<link.h>'s RT_CONSISTENT, RT_ADD,
    /// RT_DELETE).
    public enum State: Int32, Sendable { case consistent = 0, adding = 1, deleting = 2 }

    /// ld.so, as mapped in the tracee.
    public let loader: Module
    /// The tracee address of `_r_debug`.
    public let rDebug: UInt64
    /// r_debug.r_brk: the loader's notification function (glibc's _dl_debug_state).
    public let breakpoint: UInt64

    /// struct r_debug { int r_version; struct link_map *r_map; ElfW(Addr) r_brk; enum r_state;
    /// ElfW(Addr) r_ldbase; }: the public ABI gdb relies on, the same in every glibc.
    static let brkOffset: UInt64 = 16
    static let stateOffset: UInt64 = 24

    /// The address of r_debug.r_state, for code in the tracee that reads it.
    public var stateAddress: UInt64 { rDebug + Self.stateOffset }

    /// The loader's interface, or nil for a process without one (statically linked, or a loader
    /// that exports no `_r_debug`).
    public static func find(symbols: SymbolTable, memory: RemoteMemory) -> LoaderInterface? {
        guard let loader = symbols.modules.first(where: { $0.name.hasPrefix("ld-linux") || $0.name.hasPrefix("ld.so") }),
              let rDebug = symbols.anySymbol("_r_debug"), loader.contains(rDebug),
              let brk = try? memory.readU64(at: rDebug + brkOffset), loader.executableContains(brk) else { return nil }
        return LoaderInterface(loader: loader, rDebug: rDebug, breakpoint: brk)
    }

    /// r_debug.r_state now; nil when it reads as none of the three.
    public func state(_ memory: RemoteMemory) throws -> State? {
        let bytes = try memory.read(at: stateAddress, count: 4)
        return State(rawValue: Int32(bitPattern: UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24))
    }
}
