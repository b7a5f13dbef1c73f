import CPtrace
import Glibc

/// A function of the tracee, at its tracee address.
public struct FunctionSymbol: Sendable, Equatable {
    public var module: String
    /// The name with any version suffix stripped (`memcpy@@GLIBC_2.14` is `memcpy`).
    public var name: String
    public var address: UInt64
    /// Bytes, from the symbol table; 0 when unknown (an IFUNC implementation with no symbol).
    public var size: UInt64
    /// For an IFUNC: the resolver's address (`address` is the implementation the tracee runs).
    public var ifuncResolver: UInt64?
    /// A mangled name (C++, Rust) made readable, with its parameter list
    /// (`Server::handle(int)`); nil for a name that is not mangled, and in a symbol table that
    /// shows raw names (--mangled). Demangling is lazy: this is filled in for the functions a
    /// pattern matched (`SymbolTable.resolve`, `function`) and by `SymbolTable.named`, not for
    /// every function of every module read.
    public internal(set) var demangled: String?

    /// The name reports show: demangled where that is known, else the raw name.
    public var displayName: String { demangled ?? name }

    init(module: String, name: String, address: UInt64, size: UInt64, ifuncResolver: UInt64?) {
        self.module = module
        self.name = name
        self.address = address
        self.size = size
        self.ifuncResolver = ifuncResolver
    }

    /// `module:name` as every report shows it (the name demangled, see `displayName`).
    public var label: String { "\(module):\(displayName)" }
}

/// A raw ELF relocation (RELA), with its symbol's name.
struct Relocation {
    var offset: UInt64
    var type: UInt32
    var addend: Int64
    var symbol: String
}

struct RawSymbol {
    var name: String
    var value: UInt64
    var size: UInt64
    var type: Int32
    var shndx: Int32
    /// From .dynsym: an exported name (`malloc`), not a local or internal one (`__GI___libc_malloc`).
    var dynamic: Bool = false
    /// STB_LOCAL (0), STB_GLOBAL (1), STB_WEAK (2): a local name (a static TLS variable, say)
    /// is in .dynsym for the loader's sake, and binds nothing.
    var bind: Int32 = 1
}

/// The symbol and relocation tables of one module, read with libelf.
struct ElfTables {
    var symbols: [RawSymbol] = []
    var relocations: [Relocation] = []
    /// The separate debug file the symbols were completed from, if any (see DebugFile).
    var debugFile: String?

    static let sttFunc: Int32 = 2
    static let sttGnuIfunc: Int32 = 10
    static let rGlobDat: UInt32 = 6
    static let rJumpSlot: UInt32 = 7
    static let rIrelative: UInt32 = 37

    static func read(_ module: Module) throws -> ElfTables {
        let box = Box()
        var err = [CChar](repeating: 0, count: 256)
        let ctx = Unmanaged.passUnretained(box).toOpaque()
        let symCB: hk_sym_cb = { sym, ctx in
            let s = sym!.pointee
            let box = Unmanaged<Box>.fromOpaque(ctx!).takeUnretainedValue()
            if s.dynamic == 0 { box.hasSymtab = true }
            box.tables.symbols.append(RawSymbol(name: String(cString: s.name), value: s.value, size: s.size,
                                                type: s.type, shndx: s.shndx, dynamic: s.dynamic != 0, bind: s.bind))
        }
        let relaCB: hk_rela_cb = { r, ctx in
            let rel = r!.pointee
            let box = Unmanaged<Box>.fromOpaque(ctx!).takeUnretainedValue()
            box.tables.relocations.append(Relocation(offset: rel.offset, type: rel.type, addend: rel.addend,
                                                     symbol: String(cString: rel.sym_name)))
        }
        let rc: Int32
        switch module.source {
        case .file(let path):
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd < 0 { throw InjectorError.elf(path: module.path, detail: errnoText(errno)) }
            defer { close(fd) }
            rc = hk_elf_walk_fd(fd, symCB, relaCB, ctx, &err, err.count)
        case .memory(let bytes):
            rc = bytes.withUnsafeBytes { hk_elf_walk_mem($0.baseAddress, $0.count, symCB, relaCB, ctx, &err, err.count) }
        }
        if rc != 0 { throw InjectorError.elf(path: module.path, detail: String(cString: err)) }
        // A stripped module (no .symtab) takes its full symbol table from its debug file.
        if !box.hasSymtab, let debug = DebugFile.find(for: module) {
            let fd = open(debug, O_RDONLY | O_CLOEXEC)
            if fd >= 0 {
                defer { close(fd) }
                var debugErr = [CChar](repeating: 0, count: 256)
                // Every function, locals included (as a .symtab gives them): the crash first seen
                // with all of libc6-dbg's locals was a branch from one function into another's
                // displaced bytes (mempcpy into memmove), which IncomingBranches now refuses;
                // cold parts and __restore_rt are refused as not entered by a call.
                let everySymbol: hk_sym_cb = { sym, ctx in
                    guard let s = sym?.pointee else { return }
                    let box = Unmanaged<Box>.fromOpaque(ctx!).takeUnretainedValue()
                    box.tables.symbols.append(RawSymbol(name: String(cString: s.name), value: s.value, size: s.size,
                                                        type: s.type, shndx: s.shndx, dynamic: false))
                }
                _ = hk_elf_walk_fd(fd, everySymbol, nil, ctx, &debugErr, debugErr.count)
                box.tables.debugFile = debug
            }
        }
        return box.tables
    }

    private final class Box {
        var tables = ElfTables()
        var hasSymtab = false
    }
}

extension String {
    /// `memcpy@@GLIBC_2.14` → `memcpy`; names without a version are unchanged.
    var strippingSymbolVersion: String {
        guard let at = firstIndex(of: "@"), at != startIndex else { return self }
        return String(self[..<at])
    }
}

/// An ELF file on disk, read without loading it.
public enum ElfFile {
    /// Names (versions stripped) of every symbol the file defines, from .symtab and .dynsym;
    /// nil when it cannot be read as ELF.
    public static func definedSymbols(path: String) -> Set<String>? {
        let module = Module(name: path, path: path, mappings: [], bias: 0, elfType: 0, programHeaders: [],
                            buildID: [], source: .file(path), deleted: false)
        guard let tables = try? ElfTables.read(module) else { return nil }
        return Set(tables.symbols.filter { $0.shndx != 0 }.map { $0.name.strippingSymbolVersion })
    }
}
