import Glibc
import Injector
import TestSupport
import XCTest
@testable import RemoteTramp

/// A target with hooks attached in-process: attach, link, update, resume; then the test talks
/// to the target; then `finish()` stops, reads stats, restores and detaches.
final class HookHarness {
    let target: TargetProcess
    let symbols: SymbolTable
    let tracee: Tracee
    let table: TrampolineTable
    var links: [Link] = []

    static var progs: String { Repo.target("libprogs.so") }
    static var replaceLib: String { Repo.target("libreplace.so") }
    static var runtime: String { "\(Repo.root)/.build/debug/libhookit_rt.so" }

    init(_ targetName: String = "hooktarget") throws {
        target = try TargetProcess(targetName)
        symbols = try SymbolTable(pid: target.pid)
        tracee = try Tracee.attach(pid: target.pid)
        var options = TrampolineTable.Options()
        options.runtimeLibrary = Self.runtime
        table = TrampolineTable(tracee: tracee, symbols: symbols, options: options)
    }

    func function(_ name: String) throws -> FunctionSymbol {
        try symbols.function(name.contains(":") ? name : "\(moduleName):\(name)")
    }

    var moduleName: String { symbols.executable?.name ?? "hooktarget" }

    @discardableResult
    func link(_ kind: ProgramKind, _ function: String, _ program: String? = nil, cookie: UInt64 = 0) throws -> Link {
        let spec: ProgramSpec = program.map { .user(library: $0.hasPrefix("/") ? String($0.split(separator: ":")[0]) : Self.progs,
                                                    symbol: String($0.split(separator: ":").last!)) } ?? .count
        let l = try change.link(kind, spec, to: try self.function(function), cookie: cookie)
        links.append(l)
        return l
    }

    /// The links made since the last `go`, as the CLI makes them.
    private lazy var change = table.begin()

    /// Makes the links live and lets the target run.
    func go() throws {
        try change.commit()
        change = table.begin()
        try tracee.resumeWorld()
    }

    func stats(_ link: Link) throws -> LinkStats {
        try tracee.stopWorld()
        defer { try? tracee.resumeWorld() }
        return try table.stats(link)
    }

    /// Restores every entry and detaches; returns the table's report.
    @discardableResult
    func finish() throws -> TableDetachReport {
        if !tracee.held { try tracee.stopWorld() }
        let report = table.detach()
        tracee.detach()
        return report
    }
}
