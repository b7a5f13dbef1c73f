/// What `--if` tests about a call, as a tree: comparisons of a call's values with constants,
/// string tests of its string arguments, and their combinations. FilterProgram turns it into
/// what the runtime evaluates in the calling thread (filter.c).
public indirect enum FilterExpression: Hashable, Sendable {
    /// A value of the call, compared as a signed 64-bit integer.
    public enum Value: Hashable, Sendable {
        case argument(Int)
        /// Known only at the call's exit.
        case returnValue
        case threadID
        /// Nanoseconds since the call's entry: known only at its exit.
        case duration
    }

    public enum Comparison: String, CaseIterable, Sendable {
        case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
    }

    case compare(Value, Comparison, Int64)
    /// The C string argument `argument` equals the text exactly.
    case stringEquals(argument: Int, String)
    /// The C string argument `argument` matches the glob (`*`, `?`, `\` escapes the next byte).
    case stringMatches(argument: Int, glob: String)
    case not(FilterExpression)
    case and(FilterExpression, FilterExpression)
    case or(FilterExpression, FilterExpression)

    /// Whether it tests `ret` or `ns`, so can be decided only when the call returns.
    public var decidedAtExit: Bool { contains { $0 == .returnValue || $0 == .duration } }

    /// Whether it needs the time of the call's entry.
    var usesDuration: Bool { contains { $0 == .duration } }

    private func contains(_ value: (Value) -> Bool) -> Bool {
        switch self {
        case .compare(let v, _, _): value(v)
        case .stringEquals, .stringMatches: false
        case .not(let e): e.contains(value)
        case .and(let a, let b), .or(let a, let b): a.contains(value) || b.contains(value)
        }
    }
}
