import Glibc
import CPtrace

/// The functions of a tracee, module by module, with IFUNCs resolved to the implementation the
/// tracee actually runs. Reading needs no ptrace stop: /proc/PID/maps, the ELF files and the
/// tracee's GOTs (process_vm_readv) are enough.
public final class SymbolTable {
    public let pid: pid_t
    public let modules: [Module]
    let memory: RemoteMemory
    private var tables: [String: ElfTables] = [:]
    private var functionsCache: [String: [FunctionSymbol]] = [:]
    /// IFUNCs whose implementation could not be found (no resolved GOT slot anywhere).
    public private(set) var unresolvedIFuncs: [String] = []
    /// Functions show their raw (mangled) names, not demangled ones (patterns match both alike).
    public let mangledNames: Bool

    public init(pid: pid_t, memory: RemoteMemory? = nil, mangledNames: Bool = false) throws {
        self.pid = pid
        self.mangledNames = mangledNames
        self.memory = memory ?? RemoteMemory(pid: pid)
        self.modules = try Modules.read(pid: pid, memory: self.memory)
        if modules.isEmpty {
            throw InjectorError.elf(path: "/proc/\(pid)/maps",
                                    detail: "no executable module could be read (neither /proc/\(pid)/map_files nor /proc/\(pid)/root gave access to its files)")
        }
    }

    /// The main executable: the module mapping the file /proc/PID/exe points to.
    public var executable: Module? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/\(pid)/exe", &buf, buf.count - 1)
        let exe = n > 0 ? String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        let path = exe.hasSuffix(" (deleted)") ? String(exe.dropLast(10)) : exe
        return modules.first { $0.path == path } ?? modules.first
    }

    public func module(named name: String) -> Module? { modules.first { $0.name == name } }

    func elfTables(_ module: Module) -> ElfTables {
        if let t = tables[module.path] { return t }
        let t = (try? ElfTables.read(module)) ?? ElfTables()
        tables[module.path] = t
        return t
    }

    /// Every defined function of a module, sorted by address; aliases are listed once per name.
    /// Names are raw here (see `named`).
    public func functions(in module: Module) -> [FunctionSymbol] {
        if let f = functionsCache[module.path] { return f }
        let t = elfTables(module)
        var seen = Set<String>()
        var out: [FunctionSymbol] = []
        for s in t.symbols where (s.type == ElfTables.sttFunc || s.type == ElfTables.sttGnuIfunc) && s.shndx != 0 && s.value != 0 {
            let name = s.name.strippingSymbolVersion
            let key = "\(name)@\(s.value)"
            if !seen.insert(key).inserted { continue }
            let addr = module.bias &+ s.value
            if s.type == ElfTables.sttGnuIfunc {
                guard let impl = resolveIFunc(name: name, resolverValue: s.value, in: module) else {
                    unresolvedIFuncs.append("\(module.name):\(name)")
                    continue
                }
                out.append(FunctionSymbol(module: module.name, name: name, address: impl,
                                          size: sizeOfFunction(at: impl, in: module, symbols: t), ifuncResolver: addr))
            } else {
                out.append(FunctionSymbol(module: module.name, name: name, address: addr, size: s.size, ifuncResolver: nil))
            }
        }
        // Aliases sort the public name first (exported, no leading underscore), so a function
        // hooked once under its first name is `malloc`, not `__libc_malloc` or, from a debug
        // file's .symtab, `__GI___libc_malloc`.
        let exported = Set(t.symbols.filter(\.dynamic).map { $0.name.strippingSymbolVersion })
        func rank(_ f: FunctionSymbol) -> Int { (exported.contains(f.name) ? 0 : 2) + (f.name.hasPrefix("_") ? 1 : 0) }
        out.sort { ($0.address, rank($0), $0.name) < ($1.address, rank($1), $1.name) }
        functionsCache[module.path] = out
        return out
    }

    /// The implementation an IFUNC resolved to in this tracee. The dynamic linker wrote it into
    /// GOT slots: a GLOB_DAT/JUMP_SLOT slot naming the symbol in any module (lazy JUMP_SLOTs
    /// not yet bound still point at their own PLT and are skipped), or the defining module's
    /// own IRELATIVE slot whose addend is the resolver.
    func resolveIFunc(name: String, resolverValue: UInt64, in module: Module) -> UInt64? {
        let resolver = module.bias &+ resolverValue
        func plausible(_ v: UInt64) -> Bool { v != resolver && module.executableContains(v) }
        for other in modules where !other.isVDSO {
            for r in elfTables(other).relocations
            where (r.type == ElfTables.rGlobDat || r.type == ElfTables.rJumpSlot) && r.symbol.strippingSymbolVersion == name {
                if let v = try? memory.readU64(at: other.bias &+ r.offset), plausible(v) { return v }
            }
        }
        for r in elfTables(module).relocations where r.type == ElfTables.rIrelative && UInt64(bitPattern: r.addend) == resolverValue {
            if let v = try? memory.readU64(at: module.bias &+ r.offset), plausible(v) { return v }
        }
        return nil
    }

    /// The symbol's size, or else the extent of the .eh_frame FDE that starts exactly there
    /// (an IFUNC implementation of a stripped library has no symbol, but has its FDE). 0:
    /// unknown.
    private func sizeOfFunction(at address: UInt64, in module: Module, symbols t: ElfTables) -> UInt64 {
        let value = address &- module.bias
        if let s = t.symbols.first(where: { $0.type == ElfTables.sttFunc && $0.value == value }), s.size > 0 { return s.size }
        guard let owner = modules.first(where: { $0.contains(address) }), case .file(let path) = owner.source,
              let index = hk_fde_open(path) else { return 0 }
        defer { hk_fde_close(index) }
        var start: UInt64 = 0, end: UInt64 = 0
        let vaddr = address &- owner.bias
        guard hk_fde_range(index, vaddr, &start, &end) == 0, start == vaddr, end > start else { return 0 }
        return end - start
    }

    /// The functions matching each pattern, in pattern order, without duplicates. A pattern
    /// whose module part matches no module, or that matches no function, is an error.
    public func resolve(_ patterns: [SymbolPattern]) throws -> [FunctionSymbol] {
        var out: [FunctionSymbol] = []
        var seen = Set<String>()
        for p in patterns {
            let mods = modules.filter { p.matchesModule($0.name) }
            if mods.isEmpty { throw InjectorError.noModule(pattern: p.text, available: modules.map(\.name)) }
            var matched = 0
            for m in mods {
                for f in functions(in: m) where p.matches(f) {
                    matched += 1
                    if seen.insert("\(f.module):\(f.name)@\(f.address)").inserted { out.append(named(f)) }
                }
            }
            if matched == 0 { throw InjectorError.noSymbol(pattern: p.text) }
        }
        return out
    }

    /// Exactly one function for a `[MODULE:]NAME`; the first module in load order wins.
    public func function(_ text: String) throws -> FunctionSymbol {
        let p = try SymbolPattern(text)
        for m in modules where p.matchesModule(m.name) {
            if let f = functions(in: m).first(where: { p.matches($0) }) { return named(f) }
        }
        if !modules.contains(where: { p.matchesModule($0.name) }) {
            throw InjectorError.noModule(pattern: p.text, available: modules.map(\.name))
        }
        throw InjectorError.noSymbol(pattern: text)
    }
}

extension SymbolTable {
    /// `f` with its demangled name filled in (unless the table shows raw names).
    /// Done only for functions about to be reported: demangling every function of a big C++
    /// library up front would slow every pattern down (patterns demangle lazily, see
    /// SymbolPattern.matches), and a C library's names never reach the demangler at all.
    public func named(_ f: FunctionSymbol) -> FunctionSymbol {
        guard !mangledNames, f.demangled == nil, let full = Demangle.full(f.name) else { return f }
        var out = f
        out.demangled = full
        return out
    }

    /// The address of a defined dynamic symbol of any type of `module` (what the tracee's dlsym
    /// would find in it, versioned names aside).
    public func definedSymbol(_ name: String, in module: Module) -> UInt64? {
        elfTables(module).symbols.first { $0.dynamic && $0.shndx != 0 && $0.value != 0 && $0.name.strippingSymbolVersion == name }
            .map { module.bias &+ $0.value }
    }

    /// The address of a defined symbol of any type (data included), in the first module that
    /// has it: e.g. glibc's `__rseq_offset`.
    public func anySymbol(_ name: String) -> UInt64? {
        for m in modules where !m.isVDSO {
            if let s = elfTables(m).symbols.first(where: { $0.shndx != 0 && $0.value != 0 && $0.name.strippingSymbolVersion == name }) {
                return m.bias &+ s.value
            }
        }
        return nil
    }
}
