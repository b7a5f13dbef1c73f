import Injector

/// One change of a tracee's hooks — programs linked and unlinked — made live together by
/// `commit` or not at all. It is the whole "prepare, link, update, roll back" sequence in one
/// place: the CLI's attach, interactive add and remove, and the tests all go through it.
///
/// Nothing here stops the world: analysis, links, library loading and image building happen
/// while the process runs, and `TrampolineTable.update` stops it only for the pokes. If
/// anything fails, every link of the transaction is taken back, every unlink undone, and the
/// functions it touched are made live again as they were (their entries poked back if needed).
public final class HookTransaction {
    public let table: TrampolineTable
    public private(set) var linked: [Link] = []
    private var unlinked: [Link] = []
    private var open = true

    init(table: TrampolineTable) { self.table = table }

    /// Reads and checks the entries of `functions` before anything is linked, while the process
    /// runs; the functions refused, with the reason.
    @discardableResult
    public func prepare(_ functions: [FunctionSymbol]) -> [(function: FunctionSymbol, error: Error)] {
        table.prepare(functions)
    }

    /// See TrampolineTable.link.
    @discardableResult
    public func link(_ kind: ProgramKind, _ spec: ProgramSpec, to function: FunctionSymbol, cookie: UInt64 = 0,
                     raw: Bool = false, filter: CallFilter? = nil) throws -> Link {
        precondition(open, "the transaction was committed or rolled back")
        let l = try table.link(kind, spec, to: function, cookie: cookie, raw: raw, filter: filter)
        linked.append(l)
        return l
    }

    public func unlink(_ id: Int) throws {
        precondition(open, "the transaction was committed or rolled back")
        guard let l = table.links[id] else { throw TrampolineError.unknownLink(id: id) }
        try table.unlink(id)
        unlinked.append(l)
    }

    /// Makes every change live (one stop for all the pokes). On failure the transaction is
    /// rolled back and the error rethrown.
    public func commit() throws {
        precondition(open, "the transaction was committed or rolled back")
        do {
            try table.update()
            open = false
        } catch {
            rollback()
            throw error
        }
    }

    /// Takes back every change of this transaction, as far as the tracee allows (a function
    /// whose entry cannot be poked back stays as it is and its image stays mapped).
    public func rollback() {
        guard open else { return }
        open = false
        for l in linked.reversed() { try? table.unlink(l.id) }
        for l in unlinked { table.relink(l) }
        try? table.update()
        for l in linked { if let t = table.trampoline(at: l.function.address) { table.put(t) } }
    }
}

extension TrampolineTable {
    /// A new change of the hooks (see HookTransaction).
    public func begin() -> HookTransaction { HookTransaction(table: self) }
}
