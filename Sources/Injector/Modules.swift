import CPtrace
import Glibc

/// Where a module's ELF image is read from. Files are opened through /proc/PID/map_files (the
/// very inode that is mapped, so a deleted or replaced file still reads right) or, failing that,
/// /proc/PID/root (the tracee's own mount namespace). The vDSO is read from tracee memory.
public enum ElfSource: Sendable {
    case file(String)
    case memory([UInt8])
}

/// A program header, as the ELF file states it.
public struct ProgramHeader: Sendable {
    public var type: UInt32, flags: UInt32
    public var offset: UInt64, vaddr: UInt64, filesz: UInt64, memsz: UInt64
    public var isLoad: Bool { type == 1 }
    public var isExecutable: Bool { flags & 1 != 0 }
}

/// One loaded ELF object of the tracee: the executable, a shared library, or the vDSO.
public struct Module: Sendable {
    /// The name patterns use: the file's basename (`libc.so.6`), or `linux-vdso.so.1`.
    public var name: String
    /// The path as /proc/PID/maps shows it (" (deleted)" stripped).
    public var path: String
    public var mappings: [Mapping]
    /// Added to an ELF virtual address to get the tracee address.
    public var bias: UInt64
    public var elfType: Int32
    public var programHeaders: [ProgramHeader]
    public var buildID: [UInt8]
    public var source: ElfSource
    public var deleted: Bool

    public var start: UInt64 { mappings.map(\.start).min() ?? 0 }
    public var end: UInt64 { mappings.map(\.end).max() ?? 0 }
    public var isVDSO: Bool { name == "linux-vdso.so.1" }

    public func contains(_ address: UInt64) -> Bool {
        mappings.contains { address >= $0.start && address < $0.end }
    }

    public func executableContains(_ address: UInt64) -> Bool {
        mappings.contains { $0.executable && address >= $0.start && address < $0.end }
    }
}

public enum Modules {
    /// The tracee's ELF modules, from /proc/PID/maps. Mappings of one file are grouped; only
    /// files with an executable mapping count as modules (data files and fonts do not).
    public static func read(pid: pid_t, memory: RemoteMemory) throws -> [Module] {
        let maps: [Mapping]
        do {
            maps = try ProcMaps.read(pid)
        } catch InjectorError.proc(_, let e) where e == EACCES || e == EPERM {
            throw InjectorError.permissionDenied(pid: pid, operation: "read the memory map of", hint: Preflight.permissionHint(pid))
        }
        var groups: [String: [Mapping]] = [:]
        var order: [String] = []
        for m in maps where m.isFile || m.path == "[vdso]" {
            let key = m.path == "[vdso]" ? "[vdso]" : "\(m.device) \(m.inode) \(m.filePath)"
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(m)
        }
        var modules: [Module] = []
        for key in order {
            let ms = groups[key]!
            guard ms.contains(where: \.executable) else { continue }
            if let module = try? load(pid: pid, mappings: ms, memory: memory) { modules.append(module) }
        }
        return modules
    }

    /// The one module mapping `address` now, read from /proc/PID/maps: a library loaded after the
    /// symbol table was read (a replacement hookit just loaded) without reading every module again.
    public static func module(containing address: UInt64, pid: pid_t, memory: RemoteMemory) throws -> Module? {
        let maps = try ProcMaps.read(pid)
        guard let hit = maps.first(where: { address >= $0.start && address < $0.end && $0.isFile }) else { return nil }
        let ms = maps.filter { $0.isFile && $0.device == hit.device && $0.inode == hit.inode && $0.filePath == hit.filePath }
        return try load(pid: pid, mappings: ms, memory: memory)
    }

    static func load(pid: pid_t, mappings: [Mapping], memory: RemoteMemory) throws -> Module {
        let first = mappings.min(by: { $0.offset < $1.offset || ($0.offset == $1.offset && $0.start < $1.start) })!
        if first.path == "[vdso]" {
            let bytes = try memory.read(at: first.start, count: Int(first.size))
            let info = try elfInfo(.memory(bytes), label: "[vdso]")
            return try module(name: "linux-vdso.so.1", path: "[vdso]", mappings: mappings, first: first,
                              info: info, source: .memory(bytes), deleted: false)
        }
        let path = first.filePath
        let candidates = ["/proc/\(pid)/map_files/\(hex(first.start))-\(hex(first.end))", "/proc/\(pid)/root\(path)"]
        var lastError: Error = InjectorError.elf(path: path, detail: "not readable")
        for candidate in candidates {
            do {
                let info = try elfInfo(.file(candidate), label: path)
                let base = String(path.split(separator: "/").last ?? Substring(path))
                return try module(name: base, path: path, mappings: mappings, first: first, info: info,
                                  source: .file(candidate), deleted: first.deleted)
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    private static func module(name: String, path: String, mappings: [Mapping], first: Mapping, info: hk_elf_info,
                               source: ElfSource, deleted: Bool) throws -> Module {
        var phdrs: [ProgramHeader] = []
        withUnsafeBytes(of: info.phdr) { raw in
            let p = raw.bindMemory(to: hk_phdr.self)
            for i in 0..<Int(info.nphdr) {
                phdrs.append(ProgramHeader(type: p[i].type, flags: p[i].flags, offset: p[i].offset,
                                           vaddr: p[i].vaddr, filesz: p[i].filesz, memsz: p[i].memsz))
            }
        }
        // The PT_LOAD that maps the lowest file offset fixes the bias:
        // tracee address of file offset O = bias + p_vaddr + (O - p_offset).
        let page: UInt64 = 4096
        guard let seg = phdrs.filter(\.isLoad).first(where: {
            first.offset >= ($0.offset & ~(page - 1)) && first.offset < $0.offset + max($0.filesz, 1)
        }) ?? phdrs.first(where: \.isLoad) else {
            throw InjectorError.elf(path: path, detail: "no PT_LOAD segment")
        }
        let bias = first.start &- seg.vaddr &- first.offset &+ seg.offset
        let buildID = withUnsafeBytes(of: info.build_id) { Array($0.prefix(Int(info.build_id_len))) }
        return Module(name: name, path: path, mappings: mappings, bias: bias, elfType: info.type,
                      programHeaders: phdrs, buildID: buildID, source: source, deleted: deleted)
    }

    static func elfInfo(_ source: ElfSource, label: String) throws -> hk_elf_info {
        var info = hk_elf_info()
        var err = [CChar](repeating: 0, count: 256)
        let rc: Int32
        switch source {
        case .file(let path):
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd < 0 { throw InjectorError.elf(path: label, detail: errnoText(errno)) }
            defer { close(fd) }
            rc = hk_elf_info_fd(fd, &info, &err, err.count)
        case .memory(let bytes):
            rc = bytes.withUnsafeBytes { hk_elf_info_mem($0.baseAddress, $0.count, &info, &err, err.count) }
        }
        if rc != 0 { throw InjectorError.elf(path: label, detail: String(cString: err)) }
        return info
    }
}

extension Module {
    /// The bytes the ELF file holds for tracee address `address`: what the code looked like
    /// before anything patched it. nil when the address is not file-backed.
    public func fileBytes(at address: UInt64, count: Int) -> [UInt8]? {
        let vaddr = address &- bias
        guard let seg = programHeaders.first(where: { $0.isLoad && vaddr >= $0.vaddr && vaddr + UInt64(count) <= $0.vaddr + $0.filesz })
        else { return nil }
        let fileOffset = seg.offset + (vaddr - seg.vaddr)
        switch source {
        case .memory(let image):
            guard Int(fileOffset) + count <= image.count else { return nil }
            return Array(image[Int(fileOffset)..<Int(fileOffset) + count])
        case .file(let path):
            guard let fd = FileCache.descriptor(path) else { return nil }
            var buf = [UInt8](repeating: 0, count: count)
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, Int(fileOffset)) }
            return n == count ? buf : nil
        }
    }
}

/// Open descriptors of module files, so checking thousands of functions against their file
/// costs one open per module, not one per function. Descriptors stay open for the process's
/// life (hookit is short-lived; a library user holds a handful at most).
enum FileCache {
    nonisolated(unsafe) private static var fds: [String: Int32] = [:]

    static func descriptor(_ path: String) -> Int32? {
        if let fd = fds[path] { return fd }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        fds[path] = fd
        return fd
    }
}
