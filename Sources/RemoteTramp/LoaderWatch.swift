import Glibc
import Injector

/// Hooks in libraries the process loads later (issue 17): the loader's notification function
/// (r_debug.r_brk, glibc's _dl_debug_state: a bare `ret` in its own 16-byte slot) is patched to
/// jump to the runtime's hookit_rt_loader_entry, which, when a dlopen has mapped its new objects
/// (r_state RT_CONSISTENT, before relocation and constructors), tells hookit through a socket and
/// waits for the answer (see HookitRuntime/loader.c). hookit patches the new modules meanwhile,
/// so none of their functions can have run unhooked.
///
/// Safety: the patch replaces the `ret` and 4 bytes of the padding after it, which nothing
/// executes; a thread about to execute the `ret` executes the jump instead, which does the same
/// and more. The poke is one write of 5 bytes within a page while the world is stopped. If hookit
/// dies, the runtime's send or wait fails and the loader goes on (design.md invariant 4); the
/// patch stays, harmless, and a later hookit finds a foreign patch there and says so.
public final class LoaderWatch {
    public let interface: LoaderInterface
    let tracee: Tracee
    let channel: NotificationChannel
    let original: [UInt8]
    let patch: [UInt8]
    let fdVariable: UInt64
    let quietVariable: UInt64
    private var removed = false

    /// hookit's end of the socket: readable when a thread waits for hookit.
    public var descriptor: Int32 { channel.fd }

    init(table: TrampolineTable, symbols: SymbolTable) throws {
        let tracee = table.tracee
        guard let interface = LoaderInterface.find(symbols: symbols, memory: tracee.memory) else {
            throw TrampolineError.loaderNotFollowed(reason: "the process has no dynamic loader exporting _r_debug (statically linked?)")
        }
        let site = interface.breakpoint
        let found = try tracee.memory.read(at: site, count: PatchSite.patchLength)
        let filler: Set<UInt8> = [0x66, 0x2E, 0x0F, 0x1F, 0x84, 0x00, 0x40, 0x44, 0x80, 0x90, 0xCC]
        guard found.first == 0xC3, found.dropFirst().allSatisfy(filler.contains),
              interface.loader.fileBytes(at: site, count: found.count) == found,
              site / 4096 == (site + UInt64(found.count) - 1) / 4096 else {
            throw TrampolineError.loaderNotFollowed(reason: "the loader's r_brk at 0x\(String(site, radix: 16)) is not a bare ret followed by padding (\(found.map { String($0, radix: 16) }.joined(separator: " ")))")
        }
        let entry = try table.runtimeSymbol("hookit_rt_loader_entry")
        let distance = Int64(bitPattern: entry &- (site + 5))
        guard distance >= Int64(Int32.min) && distance <= Int64(Int32.max) else {
            throw TrampolineError.loaderNotFollowed(reason: "hookit's runtime is out of a jump's reach of the loader")
        }
        self.interface = interface
        self.tracee = tracee
        self.original = found
        self.patch = EntryPatch.jmp(from: site, to: entry)
        self.fdVariable = try table.runtimeSymbol("hookit_rt_loader_fd")
        self.quietVariable = try table.runtimeSymbol("hookit_rt_loader_quiet")
        let stateVariable = try table.runtimeSymbol("hookit_rt_loader_state")
        channel = try NotificationChannel.open(in: tracee)
        do {
            // The runtime reads the state pointer only once the descriptor is set; the patch
            // comes last, when everything it reaches is in place.
            try tracee.memory.write([UInt8].le(interface.stateAddress), at: stateVariable)
            try tracee.memory.write(Array([UInt8].le(UInt64(UInt32(bitPattern: channel.traceeFD))).prefix(4)), at: fdVariable)
            try poke(expected: original, new: patch)
        } catch {
            try? tracee.memory.write([0xFF, 0xFF, 0xFF, 0xFF], at: fdVariable)
            channel.close(in: tracee)
            throw error
        }
        table.programs.loaderQuiet = quietVariable
    }

    /// The next thread waiting at a loader notification; nil when none is.
    public func next() -> pid_t? { channel.receive() }

    /// Lets a thread waiting at a notification go on (each message is answered exactly once).
    public func answer(_ tid: pid_t) { channel.answer(tid) }

    /// Runs `body` (hookit's work for a thread waiting at a notification) with the runtime told
    /// not to ask: that thread holds the loader's lock, so the only notifications that can come
    /// meanwhile are those of hookit's own remote calls on it, which hookit could not answer
    /// while it waits for the call.
    public func whileServicing<T>(_ body: () throws -> T) throws -> T {
        try tracee.memory.write([1, 0, 0, 0], at: quietVariable)
        defer { try? tracee.memory.write([0, 0, 0, 0], at: quietVariable) }
        return try body()
    }

    /// What the loader says it is doing now.
    public func state() -> LoaderInterface.State? { try? interface.state(tracee.memory) }

    /// Takes the patch out and closes the socket: the runtime stops asking first, threads already
    /// waiting are answered, then the entry is restored (world stopped). After an exec the old
    /// image's addresses mean nothing: only hookit's end is closed.
    func remove() throws {
        guard !removed else { return }
        removed = true
        if tracee.exited || tracee.execed {
            channel.close(in: nil)
            return
        }
        try? tracee.memory.write([0xFF, 0xFF, 0xFF, 0xFF], at: fdVariable)
        while let t = next() { answer(t) }
        defer { channel.close(in: tracee) }
        try poke(expected: patch, new: original)
    }

    private func poke(expected: [UInt8], new: [UInt8]) throws {
        let stopsHere = !tracee.held
        if stopsHere { try tracee.stopWorld() }
        defer { if stopsHere { try? tracee.resumeWorld() } }
        try TextPoke.poke(tracee, at: interface.breakpoint, expected: expected, new: new, function: "the loader's r_brk")
    }
}

extension TrampolineTable {
    /// Starts following the loader (loads the runtime if needed); the watch is removed by
    /// `detach` before anything else, or by `stopFollowingLoader`.
    public func followLoader() throws -> LoaderWatch {
        if let w = loaderWatch { return w }
        let w = try LoaderWatch(table: self, symbols: symbols)
        loaderWatch = w
        return w
    }

    /// Takes the loader patch out (detach does it too).
    public func stopFollowingLoader() throws {
        defer { loaderWatch = nil; programs.loaderQuiet = nil }
        try loaderWatch?.remove()
    }
}
