import Glibc
import Injector

/// Which processes `hookit attach` hooks: the PIDs given, and every process `--name NAME`
/// names (its comm or its executable's base name), each once, in the order given.
struct ProcessChoice {
    let pids: [pid_t]
    let name: String?

    /// Throws NoProcessNamed when `--name` matches nothing running.
    func targets() throws -> [pid_t] {
        var chosen = pids
        if let name {
            let running = RunningProcesses.all()
            let named = running.filter { $0.isNamed(name) }
            if named.isEmpty { throw NoProcessNamed(name: name, near: Self.nearNames(name, in: running)) }
            chosen += named.map(\.pid)
        }
        var seen = Set<pid_t>()
        return chosen.filter { seen.insert($0).inserted }
    }

    /// Names of running processes a user may have meant by `name`, nearest first: within a small
    /// edit distance (a typo, a letter dropped), or holding it or held in it (a prefix, a part
    /// of a longer name), ignoring case. With the pids of each, so the answer can be used at once.
    static func nearNames(_ name: String, in running: [RunningProcess], limit: Int = 5) -> [NoProcessNamed.Near] {
        var byName: [String: [pid_t]] = [:]
        for p in running {
            for n in Set([p.comm] + (p.executable.map { [$0] } ?? [])) { byName[n, default: []].append(p.pid) }
        }
        let wanted = Array(name.lowercased())
        let scored = byName.compactMap { candidate, pids -> (Int, NoProcessNamed.Near)? in
            let c = candidate.lowercased()
            let d = editDistance(wanted, Array(c))
            let related = wanted.count >= 3 && (c.contains(String(wanted)) || (c.count >= 3 && name.lowercased().contains(c)))
            guard d <= max(1, wanted.count / 3) || related else { return nil }
            return (d, .init(name: candidate, pids: pids.sorted()))
        }
        return scored.sorted { ($0.0, $0.1.name) < ($1.0, $1.1.name) }.prefix(limit).map(\.1)
    }

    /// Levenshtein distance: insertions, deletions and substitutions, one row at a time.
    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        var row = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var diagonal = row[0]
            row[0] = i + 1
            for (j, y) in b.enumerated() {
                let above = row[j + 1]
                row[j + 1] = min(above + 1, row[j] + 1, diagonal + (x == y ? 0 : 1))
                diagonal = above
            }
        }
        return row[b.count]
    }
}

/// `--name NAME` matched no running process.
struct NoProcessNamed: Error, CustomStringConvertible {
    struct Near { let name: String, pids: [pid_t] }
    let name: String
    let near: [Near]

    var description: String {
        let what = "no running process is named '\(name)' (by its comm or its executable's base name)"
        if near.isEmpty { return what + "; `ps -e -o pid,comm` lists the names" }
        let listed = near.map { n in
            let shown = n.pids.prefix(3).map(String.init).joined(separator: " ") + (n.pids.count > 3 ? " ..." : "")
            return "\(n.name) (PID \(shown))"
        }
        return what + "; near names: " + listed.joined(separator: ", ")
    }
}
