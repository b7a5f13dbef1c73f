import Glibc

/// One line of /proc/PID/maps.
public struct Mapping: Equatable, Sendable {
    public var start: UInt64
    public var end: UInt64
    public var perms: String   // "r-xp"
    public var offset: UInt64
    public var device: String
    public var inode: UInt64
    public var path: String    // "" for anonymous; "[vdso]", "[stack]", ...; " (deleted)" kept

    public var readable: Bool { perms.hasPrefix("r") }
    public var executable: Bool { perms.count > 2 && Array(perms)[2] == "x" }
    public var isFile: Bool { inode != 0 && path.hasPrefix("/") }
    public var deleted: Bool { path.hasSuffix(" (deleted)") }
    /// The file's path without the kernel's " (deleted)" marker.
    public var filePath: String { deleted ? String(path.dropLast(" (deleted)".count)) : path }
    public var size: UInt64 { end - start }
}

/// /proc/PID/maps, parsed.
public enum ProcMaps {
    public static func read(_ pid: pid_t) throws -> [Mapping] {
        let text = try ProcFS.read("/proc/\(pid)/maps")
        return text.split(separator: "\n").compactMap(parse)
    }

    static func parse(_ line: Substring) -> Mapping? {
        // start-end perms offset dev inode [path]; the path may contain spaces.
        var fields = [Substring]()
        var rest = line[...]
        for _ in 0..<5 {
            rest = rest.drop(while: { $0 == " " })
            guard let sp = rest.firstIndex(of: " ") else { fields.append(rest); rest = ""; break }
            fields.append(rest[..<sp])
            rest = rest[sp...]
        }
        guard fields.count == 5 else { return nil }
        let range = fields[0].split(separator: "-")
        guard range.count == 2, let s = UInt64(range[0], radix: 16), let e = UInt64(range[1], radix: 16),
              let off = UInt64(fields[2], radix: 16), let ino = UInt64(fields[4]) else { return nil }
        let path = String(rest.drop(while: { $0 == " " }))
        return Mapping(start: s, end: e, perms: String(fields[1]), offset: off,
                       device: String(fields[3]), inode: ino, path: path)
    }
}
