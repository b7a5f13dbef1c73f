import Injector
import RemoteTramp

/// Libraries the process loads after the hooks went in (issue 17): a request whose module is not
/// loaded yet waits for it, and every request's pattern applies to each library loaded later
/// that it matches. RemoteTramp's LoaderWatch holds the loading thread at the loader's
/// notification until `serviceLoader` has hooked the new modules and answered.
extension HookSession {
    /// Follows the loader when a request waits for a module, or when the runtime is in the process
    /// anyway (counts, traces, C programs). A process that cannot be followed (static) is only
    /// worth a word when something waits.
    func followLoaderIfUseful() {
        let waiting = !pending.isEmpty
        guard table.loaderWatch == nil, !loaderUnfollowable, waiting || runtimeConfigured else { return }
        do {
            if waiting { try configureRuntime() }
            tracee.wakeDescriptor = try table.followLoader().descriptor
        } catch {
            // Said once: a static process cannot load libraries anyway.
            loaderUnfollowable = true
            if waiting { output.problem("\(error); the pending patterns cannot apply") }
        }
    }

    /// Answers every thread waiting at a loader notification, each once the modules that
    /// appeared are hooked. The waiting thread holds the loader's lock, so hookit's remote calls
    /// (pins, program data) run on it, never on a thread that would wait for that lock.
    func serviceLoader() {
        guard let watch = table.loaderWatch else { return }
        while let tid = watch.next() {
            defer { watch.answer(tid) }
            // A forked child shares the socket; it is not this session's process.
            guard tracee.threads[tid] != nil, watch.state() == .consistent else { continue }
            tracee.preferredLender = tid
            defer { tracee.preferredLender = nil }
            do { try watch.whileServicing { try applyToNewModules() } } catch { output.problem("a library loaded later: \(error)") }
        }
    }

    /// Reads the modules again and hooks, in each new one, what the requests match. A module
    /// that went away (dlclose of one hookit did not pin) is forgotten.
    private func applyToNewModules() throws {
        let newer = try SymbolTable(pid: tracee.pid, memory: tracee.memory, mangledNames: options.mangledNames)
        let fresh = newer.modules.filter { !knownModules.contains(Self.moduleKey($0)) }
        knownModules = Set(newer.modules.map(Self.moduleKey))
        symbols = newer
        table.useSymbols(newer)
        for m in fresh { try apply(to: m) }
    }

    /// Links every request of every hook whose pattern matches `module`, in one transaction,
    /// into the hook that asked; reports it as a `loaded` event. Refusals are reported and do
    /// not sink the rest.
    private func apply(to module: Module) throws {
        var plan: [(hook: Int, request: HookRequest, functions: [FunctionSymbol])] = []
        for (i, h) in hooks.enumerated() {
            let linked = Set(h.links.map(\.function.address))
            for r in h.requests where r.pattern.matchesModule(module.name) {
                var seen = linked
                let fs = symbols.functions(in: module).filter { r.pattern.matchesFunction($0.name) && seen.insert($0.address).inserted }
                if !fs.isEmpty { plan.append((i, r, fs)) }
            }
        }
        guard !plan.isEmpty else { return }
        var updated = hooks
        var report = AddReport()
        let change = table.begin()
        change.prepare(plan.flatMap(\.functions))
        do {
            for p in plan {
                var linked = 0
                for f in p.functions {
                    do {
                        try link(p.request, to: f, into: &updated[p.hook], change)
                        linked += 1
                    } catch let e as TrampolineError {
                        guard let reason = e.refusalReason else { throw e }
                        report.refused.append(.init(function: f.label, pattern: p.request.pattern.text, request: p.request.text, reason: reason))
                    }
                }
                report.patterns.append(.init(request: p.request.text, hooked: linked, refused: p.functions.count - linked))
            }
            try change.commit()
        } catch {
            change.rollback()
            throw error
        }
        hooks = updated
        let hit = Set(report.patterns.filter { $0.hooked > 0 }.map(\.request))
        matched.formUnion(hit)
        pending.removeAll { hit.contains($0) }
        output.loaded(module: module.name, path: module.path, report: report, pid: tracee.pid)
    }
}
