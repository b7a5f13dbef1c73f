import Injector

/// A compiled `--if` filter in the tracee: the instructions filter.c runs, with the strings they
/// compare and the ranges of memory where strings can be read with plain loads, in one block of
/// shared memory written before any link that uses it goes live. The links of one attachment (a
/// trace's entry and exit programs) share one CallFilter: the image decides once per call and
/// the other links follow that decision (ImageBuilder+Filters).
public final class CallFilter {
    public let expression: FilterExpression
    /// The block (struct filter), and hookit_rt_filter, in the tracee.
    let program: UInt64
    let evaluator: UInt64

    /// Decided at the call's exit (it tests `ret` or `ns`): the guarded entry programs run for
    /// every call, and the exit programs only for the calls that pass.
    public var decidedAtExit: Bool { expression.decidedAtExit }
    var needsEntryTime: Bool { expression.usesDuration }

    init(expression: FilterExpression, program: UInt64, evaluator: UInt64) {
        self.expression = expression
        self.program = program
        self.evaluator = evaluator
    }
}

/// The stack machine of filter.c: each test pushes a truth value; `a && b` is `a; JUMP_FALSE end;
/// POP; b; end:` (and `||` with JUMP_TRUE), so `b` is skipped (a string read saved) once `a`
/// decides. Jumps go forward only, so every evaluation ends.
enum FilterProgram {
    struct Instruction: Equatable {
        enum Op: UInt8 { case test = 1, stringEquals, stringMatches, not, jumpFalse, jumpTrue, pop }
        var op: Op
        var operand: UInt8 = 0
        var comparison: UInt8 = 0
        var aux: UInt32 = 0
        var value: UInt64 = 0
        /// For string tests: the index of the string in the program's strings (value is its
        /// address once placed).
        var string: Int?
    }

    /// Instructions a filter may have (a long expression is a mistake, not a program).
    static let maxInstructions = 256
    static let maxStableRanges = 64

    /// The instructions and the strings they compare.
    static func compile(_ e: FilterExpression) -> (code: [Instruction], strings: [[UInt8]]) {
        var code: [Instruction] = [], strings: [[UInt8]] = []
        func emit(_ e: FilterExpression) {
            switch e {
            case .compare(let v, let c, let k):
                code.append(Instruction(op: .test, operand: operand(v), comparison: UInt8(FilterExpression.Comparison.allCases.firstIndex(of: c)!),
                                        value: UInt64(bitPattern: k)))
            case .stringEquals(let arg, let s):
                code.append(Instruction(op: .stringEquals, operand: UInt8(arg), aux: UInt32(s.utf8.count), string: strings.count))
                strings.append(Array(s.utf8))
            case .stringMatches(let arg, let g):
                code.append(Instruction(op: .stringMatches, operand: UInt8(arg), aux: UInt32(g.utf8.count), string: strings.count))
                strings.append(Array(g.utf8))
            case .not(let a):
                emit(a)
                code.append(Instruction(op: .not))
            case .and(let a, let b), .or(let a, let b):
                emit(a)
                let jump = code.count
                if case .and = e { code.append(Instruction(op: .jumpFalse)) } else { code.append(Instruction(op: .jumpTrue)) }
                code.append(Instruction(op: .pop))
                emit(b)
                code[jump].aux = UInt32(code.count)
            }
        }
        emit(e)
        return (code, strings)
    }

    private static func operand(_ v: FilterExpression.Value) -> UInt8 {
        switch v {
        case .argument(let i): UInt8(i)
        case .returnValue: 6
        case .threadID: 7
        case .duration: 8
        }
    }

    /// Writes the filter into the tracee (not yet used by any image).
    static func load(_ e: FilterExpression, _ table: TrampolineTable) throws -> CallFilter {
        let (code, strings) = compile(e)
        guard code.count <= maxInstructions else { throw TrampolineError.filterTooLong(instructions: code.count, limit: maxInstructions) }
        let stable = strings.isEmpty ? [] : Array(table.symbols.permanentRanges().prefix(maxStableRanges))
        let stringCells = strings.map { ($0.count + 8) / 8 }           // NUL-padded
        let cells = 2 + 2 * code.count + 2 * stable.count + stringCells.reduce(0, +)
        let evaluator = try table.runtimeSymbol("hookit_rt_filter")
        let base = try table.allocateProgramData(cells: cells)
        let stableBase = base + UInt64(8 * (2 + 2 * code.count))
        var stringAddress: [UInt64] = []
        var at = stableBase + UInt64(16 * stable.count)
        for n in stringCells { stringAddress.append(at); at += UInt64(8 * n) }
        var words: [UInt64] = [UInt64(code.count) | UInt64(stable.count) << 32, stable.isEmpty ? 0 : stableBase]
        for i in code {
            words.append(UInt64(i.op.rawValue) | UInt64(i.operand) << 8 | UInt64(i.comparison) << 16 | UInt64(i.aux) << 32)
            words.append(i.string.map { stringAddress[$0] } ?? i.value)
        }
        for r in stable { words += [r.lowerBound, r.upperBound] }
        for (s, n) in zip(strings, stringCells) {
            let padded = s + [UInt8](repeating: 0, count: 8 * n - s.count)
            for k in 0..<n { words.append(padded[(8 * k)..<(8 * k + 8)].enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * $1.offset) }) }
        }
        table.writeProgramData(base, words)
        return CallFilter(expression: e, program: base, evaluator: evaluator)
    }
}

extension TrampolineTable {
    /// Compiles `expression` into the tracee for the links that will carry it (see CallFilter).
    public func loadFilter(_ expression: FilterExpression) throws -> CallFilter {
        try configureRuntime()
        return try FilterProgram.load(expression, self)
    }
}
