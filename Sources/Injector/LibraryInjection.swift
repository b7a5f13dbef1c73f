import CPtrace
import Glibc

/// Where an injected library landed.
public struct InjectedLibrary: Sendable {
    public var path: String
    /// dlopen's handle (glibc's struct link_map).
    public var handle: UInt64
    /// The load bias (link_map.l_addr) and the lowest mapped address of the library.
    public var bias: UInt64
    public var base: UInt64
}

extension Tracee {
    /// Loads a shared library into the tracee with its own dlopen(path, RTLD_NOW | RTLD_GLOBAL), so
    /// its symbols are visible to the tracee's own dlsym as well.
    /// The path is checked first, as the tracee sees it (/proc/PID/root), so a missing or
    /// foreign file is refused without touching the tracee; a dlopen failure reports the
    /// tracee's own dlerror() text.
    ///
    /// A library hookit can read but the tracee cannot see at that path (a container, another
    /// mount namespace: hookit's own runtime library, typically) is copied into a memfd the
    /// tracee creates and loaded from /proc/self/fd/N.
    ///
    /// `withoutNeeded`: DT_NEEDED entries the tracee's copy goes without (the copy route is then
    /// always taken): hookit's runtime is plain C, but the Swift build links every library
    /// against libswiftCore.so, whose constructors would otherwise run in the tracee.
    public func inject(library path: String, symbols: SymbolTable, withoutNeeded: [String] = [], timeout: Double = 10) throws -> InjectedLibrary {
        if beforeStart { throw InjectorError.notStarted(pid: pid, function: "dlopen(\(path))") }
        var st = stat()
        if !withoutNeeded.isEmpty
            || path.hasPrefix("/") && stat("/proc/\(pid)/root\(path)", &st) != 0 && errno == ENOENT && access(path, R_OK) == 0 {
            return try injectCopy(library: path, symbols: symbols, withoutNeeded: withoutNeeded, timeout: timeout)
        }
        try Self.checkLibrary(path, pid: pid)
        return try dlopen(path, reportedAs: path, symbols: symbols, timeout: timeout)
    }

    /// The memfd route of `inject`: hookit writes its copy of the file through
    /// /proc/PID/fd/N, and the tracee loads /proc/self/fd/N.
    ///
    /// The tracee's descriptor stays open once the library is loaded: the loader knows a loaded
    /// object by the name it was opened with, and a closed descriptor's number comes back for
    /// the next memfd, whose dlopen("/proc/self/fd/N") would then return the first library (a
    /// C program resolved to a libc function of the same name). One descriptor per such library.
    private func injectCopy(library path: String, symbols: SymbolTable, withoutNeeded: [String], timeout: Double) throws -> InjectedLibrary {
        try Self.checkFile(path, as: path, display: "as seen by hookit")
        let bytes: [UInt8]
        do {
            let local = try LibraryCopy.memfd(of: path, withoutNeeded: withoutNeeded)
            defer { Glibc.close(local) }
            guard let b = LibraryCopy.contents(local) else { throw LibraryCopy.Failure(detail: errnoText(errno)) }
            bytes = b
        } catch let e as LibraryCopy.Failure {
            throw InjectorError.libraryPath(path: path, detail: "cannot copy it into the tracee: \(e.detail)")
        }
        let name = path.split(separator: "/").last.map(String.init) ?? "library"
        // A copy an earlier session left loaded (its descriptor stays open, see above): the
        // loader gives its handle again, rather than a second copy with its own static TLS.
        if let fd = existingCopy(named: name, bytes) {
            return try dlopen("/proc/self/fd/\(fd)", reportedAs: path, symbols: symbols, timeout: timeout)
        }
        let fd = try memfdCreate(name: name)
        var loaded = false
        defer { if !loaded { try? close(fd: fd) } }
        let out = open("/proc/\(pid)/fd/\(fd)", O_WRONLY | O_CLOEXEC)
        defer { if out >= 0 { Glibc.close(out) } }
        guard out >= 0, bytes.withUnsafeBytes({ Glibc.write(out, $0.baseAddress, $0.count) }) == bytes.count else {
            throw InjectorError.libraryPath(path: path, detail: "cannot copy it into the tracee: \(errnoText(errno))")
        }
        let lib = try dlopen("/proc/self/fd/\(fd)", reportedAs: path, symbols: symbols, timeout: timeout)
        loaded = true
        return lib
    }

    private static func linkTarget(_ path: String) -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buf, buf.count - 1)
        return n > 0 ? String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }

    /// A descriptor of the tracee's on a memfd named `name` that holds exactly `bytes` and is
    /// mapped (a library loaded from it).
    private func existingCopy(named name: String, _ bytes: [UInt8]) -> Int32? {
        let link = "/memfd:\(name) (deleted)"
        guard let maps = try? ProcMaps.read(pid), maps.contains(where: { $0.path == link }),
              let dir = opendir("/proc/\(pid)/fd") else { return nil }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let fdName = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let fd = Int32(fdName), Self.linkTarget("/proc/\(pid)/fd/\(fd)") == link else { continue }
            let f = open("/proc/\(pid)/fd/\(fd)", O_RDONLY | O_CLOEXEC)
            guard f >= 0 else { continue }
            defer { Glibc.close(f) }
            if LibraryCopy.contents(f) == bytes { return fd }
        }
        return nil
    }

    private func dlopen(_ pathInTracee: String, reportedAs path: String, symbols: SymbolTable, timeout: Double) throws -> InjectedLibrary {
        let dlopen = try libcFunction("dlopen", symbols)
        let dlerror = try libcFunction("dlerror", symbols)
        let handle = try withScratch(bytes: Array(pathInTracee.utf8) + [0]) { addr in
            try call(dlopen.address, [addr, UInt64(RTLD_NOW | RTLD_GLOBAL)], name: "dlopen", timeout: timeout)
        }
        if handle == 0 {
            let msg = try call(dlerror.address, [], name: "dlerror")
            let text = msg == 0 ? "(no dlerror text)" : try memory.readCString(at: msg)
            throw InjectorError.dlopenFailed(path: path, dlerror: text)
        }
        let bias = try memory.readU64(at: handle)
        let maps = try ProcMaps.read(pid)
        let base = maps.filter { $0.filePath == path }.map(\.start).min() ?? bias
        return InjectedLibrary(path: path, handle: handle, bias: bias, base: base)
    }

    func libcFunction(_ name: String, _ symbols: SymbolTable) throws -> FunctionSymbol {
        // libc first (glibc 2.34+ has dlopen there): parsing a big C++ library's symbols while
        // the world is stopped would stretch the stop for nothing.
        let libcFirst = symbols.modules.filter { $0.name.hasPrefix("libc.so") } + symbols.modules.filter { !$0.name.hasPrefix("libc.so") }
        for m in libcFirst where !m.isVDSO {
            if let f = symbols.functions(in: m).first(where: { $0.name == name }) { return f }
        }
        throw InjectorError.missingFunction(name: name, detail: "no loaded module exports it (a statically linked tracee cannot load libraries)")
    }

    static func checkLibrary(_ path: String, pid: pid_t) throws {
        guard path.hasPrefix("/") else {
            throw InjectorError.libraryPath(path: path, detail: "the path must be absolute (the tracee resolves it from its own working directory)")
        }
        try checkFile("/proc/\(pid)/root\(path)", as: path, display: "as seen from the tracee")
    }

    /// An x86-64 shared object at `seen` (reported as `path`).
    static func checkFile(_ seen: String, as path: String, display: String) throws {
        var st = stat()
        if stat(seen, &st) != 0 {
            throw InjectorError.libraryPath(path: path, detail: "\(errnoText(errno)) \(display)")
        }
        if (st.st_mode & S_IFMT) != S_IFREG {
            throw InjectorError.libraryPath(path: path, detail: "not a regular file")
        }
        let fd = open(seen, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw InjectorError.libraryPath(path: path, detail: errnoText(errno)) }
        defer { Glibc.close(fd) }
        guard let id = ElfIdent(fd: fd) else {
            throw InjectorError.libraryPath(path: path, detail: "not an ELF file")
        }
        if !id.isX86_64 {
            throw InjectorError.libraryPath(path: path, detail: "not an x86-64 ELF object")
        }
        if !id.isSharedObject {
            throw InjectorError.libraryPath(path: path, detail: "not a shared object (ET_DYN)")
        }
    }
}

extension Tracee {
    /// The tracee's own dlsym(handle, name): the address of a symbol of a library it loaded,
    /// or nil when the library has no such symbol.
    public func dlsym(handle: UInt64, name: String, symbols: SymbolTable) throws -> UInt64? {
        if beforeStart { throw InjectorError.notStarted(pid: pid, function: "dlsym(\(name))") }
        let dlsym = try libcFunction("dlsym", symbols)
        let addr = try withScratch(bytes: Array(name.utf8) + [0]) { nameAddr in
            try call(dlsym.address, [handle, nameAddr], name: "dlsym")
        }
        return addr == 0 ? nil : addr
    }
}

extension Tracee {
    /// Takes a reference on a library the tracee has loaded (dlopen with RTLD_NOLOAD), so that
    /// its own dlclose cannot unmap it; nil when the tracee cannot (no dlopen: static) or the
    /// file is not a loaded library. The reference is given back with `unpin`.
    /// Before the program starts (`beforeStart`) every mapped library is one the loader loaded
    /// at start-up, which no dlclose can unload: nothing to pin, and nothing could be called.
    public func pin(library path: String, symbols: SymbolTable) throws -> UInt64? {
        if beforeStart { return nil }
        guard let dlopen = try? libcFunction("dlopen", symbols) else { return nil }
        let handle = try withScratch(bytes: Array(path.utf8) + [0]) { addr in
            try call(dlopen.address, [addr, UInt64(RTLD_NOW | RTLD_NOLOAD)], name: "dlopen(RTLD_NOLOAD)")
        }
        return handle == 0 ? nil : handle
    }

    /// The tracee's dlclose of a handle from `pin`.
    public func unpin(handle: UInt64, symbols: SymbolTable) throws {
        let dlclose = try libcFunction("dlclose", symbols)
        _ = try call(dlclose.address, [handle], name: "dlclose")
    }
}
