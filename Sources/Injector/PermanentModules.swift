import CPtrace
import Glibc

extension SymbolTable {
    /// The readable file mappings of modules the process can never unload: the executable, the
    /// dynamic loader, and every library in the executable's DT_NEEDED closure (each is held by
    /// a module that cannot go, so dlclose never unmaps it). Memory there can be read without a
    /// fault for as long as the process lives — string literals, for instance. Libraries that
    /// were dlopen'd are left out: a dlclose may unmap them at any moment. Sorted, merged.
    public func permanentRanges() -> [Range<UInt64>] {
        guard let exe = executable else { return [] }
        var keep: [Module] = [exe] + modules.filter { $0.name.hasPrefix("ld-linux") }
        var queue = [exe]
        var seen = Set(keep.map(\.path))
        while let m = queue.popLast() {
            for name in Self.needed(m) {
                // The file mapped may be the soname's target: libz.so.1 -> libz.so.1.2.13.
                guard let lib = modules.first(where: { $0.name == name || $0.name.hasPrefix(name + ".") }), seen.insert(lib.path).inserted else { continue }
                keep.append(lib)
                queue.append(lib)
            }
        }
        let ranges = keep.flatMap { $0.mappings.filter(\.readable).map { $0.start..<$0.end } }.sorted { $0.lowerBound < $1.lowerBound }
        var merged: [Range<UInt64>] = []
        for r in ranges {
            if let last = merged.last, last.upperBound >= r.lowerBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        return merged
    }

    /// A module's DT_NEEDED names, from its file.
    static func needed(_ m: Module) -> [String] {
        guard case .file(let path) = m.source else { return [] }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        final class Names { var all: [String] = [] }
        let names = Names()
        _ = hk_elf_needed_fd(fd, { name, ctx in
            Unmanaged<Names>.fromOpaque(ctx!).takeUnretainedValue().all.append(String(cString: name!))
        }, Unmanaged.passUnretained(names).toOpaque())
        return names.all
    }
}
