import Injector

/// dlopen references on the shared objects holding hooked functions (the seed's
/// bpf_trampoline_module_get / _put): the tracee cannot unload a module while it is hooked.
final class ModulePins {
    private var pinned: [String: UInt64] = [:]      // path -> dlopen handle

    /// The main executable and the vDSO cannot be unloaded; every other module is pinned once.
    func pin(_ module: Module, tracee: Tracee, symbols: SymbolTable) throws {
        guard pinned[module.path] == nil, module.path != symbols.executable?.path, !module.isVDSO,
              module.elfType == 3 else { return }                       // ET_DYN shared objects
        if let handle = try tracee.pin(library: module.path, symbols: symbols) { pinned[module.path] = handle }
    }

    /// Gives every reference back: nothing of hookit's points into the modules any more.
    func unpinAll(tracee: Tracee, symbols: SymbolTable) {
        for (_, handle) in pinned { try? tracee.unpin(handle: handle, symbols: symbols) }
        pinned.removeAll()
    }
}
