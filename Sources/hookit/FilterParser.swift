import RemoteTramp

/// A `--if` expression that cannot be parsed: the column (1-based) of the mistake, and what was
/// expected there.
struct FilterSyntaxError: Error, CustomStringConvertible {
    let text: String
    let column: Int
    let reason: String

    var description: String {
        "--if '\(text)': column \(column): \(reason)\n  \(text)\n  \(String(repeating: " ", count: column - 1))^"
    }
}

/// Parses `--if` expressions:
///
///     expr    := and ('||' and)*
///     and     := unary ('&&' unary)*
///     unary   := '!' unary | '(' expr ')' | test
///     test    := VALUE CMP NUMBER | 'str(' ARG ')' ('==' | '~') STRING
///     VALUE   := arg0..arg5 | ret | tid | ns        CMP := == != < <= > >=
///     NUMBER  := [-] (decimal | 0x hex) [k | M | ns | us | ms | s]      (k = 1000, M = 1000000)
///
/// STRING is double-quoted, with `\"` and `\\`. Values compare as signed 64-bit integers.
struct FilterParser {
    private let text: String
    private let chars: [Character]
    private var at = 0

    static func parse(_ text: String) throws -> FilterExpression {
        var p = FilterParser(text: text)
        let e = try p.expression()
        p.skipSpaces()
        if p.at < p.chars.count { throw p.error("expected && or || or the end, found '\(p.chars[p.at])'") }
        return e
    }

    private init(text: String) {
        self.text = text
        self.chars = Array(text)
    }

    private func error(_ reason: String, at column: Int? = nil) -> FilterSyntaxError {
        FilterSyntaxError(text: text, column: (column ?? at) + 1, reason: reason)
    }

    private mutating func skipSpaces() { while at < chars.count && chars[at].isWhitespace { at += 1 } }

    private mutating func take(_ s: String) -> Bool {
        skipSpaces()
        let c = Array(s)
        guard at + c.count <= chars.count, Array(chars[at..<at + c.count]) == c else { return false }
        at += c.count
        return true
    }

    private mutating func expression() throws -> FilterExpression {
        var e = try conjunction()
        while take("||") { e = .or(e, try conjunction()) }
        return e
    }

    private mutating func conjunction() throws -> FilterExpression {
        var e = try unary()
        while take("&&") { e = .and(e, try unary()) }
        return e
    }

    private mutating func unary() throws -> FilterExpression {
        if take("!") {
            if peek("=") { throw error("expected a test after '!', found '='", at: at) }
            return .not(try unary())
        }
        if take("(") {
            let e = try expression()
            guard take(")") else { throw error(at < chars.count ? "expected ')', found '\(chars[at])'" : "expected ')' before the end") }
            return e
        }
        return try test()
    }

    private func peek(_ c: Character) -> Bool { at < chars.count && chars[at] == c }

    private mutating func word() -> String {
        skipSpaces()
        let start = at
        while at < chars.count && (chars[at].isLetter || chars[at].isNumber || chars[at] == "_") { at += 1 }
        return String(chars[start..<at])
    }

    private mutating func test() throws -> FilterExpression {
        skipSpaces()
        let start = at
        let name = word()
        if name == "str" {
            guard take("(") else { throw error("expected '(' after str") }
            let argStart = at
            guard case .argument(let n)? = Self.value(word()) else { throw error("str() takes arg0 ... arg5", at: argStart) }
            guard take(")") else { throw error("expected ')' after str(arg\(n)") }
            let isGlob: Bool
            if take("==") { isGlob = false } else if take("~") { isGlob = true } else {
                throw error("expected == or ~ after str(arg\(n))")
            }
            let s = try string()
            return isGlob ? .stringMatches(argument: n, glob: s) : .stringEquals(argument: n, s)
        }
        if name.isEmpty { throw error(at < chars.count ? "expected a test (arg0..arg5, ret, tid, ns, str(argN)), found '\(chars[at])'" : "expected a test (arg0..arg5, ret, tid, ns, str(argN)) before the end") }
        guard let value = Self.value(name) else { throw error("unknown value '\(name)': use arg0..arg5, ret, tid, ns or str(argN)", at: start) }
        skipSpaces()
        let cmpAt = at
        guard let cmp = comparison() else { throw error("expected a comparison (== != < <= > >=) after \(name)", at: cmpAt) }
        return .compare(value, cmp, try number())
    }

    private static func value(_ name: String) -> FilterExpression.Value? {
        switch name {
        case "ret": return .returnValue
        case "tid": return .threadID
        case "ns": return .duration
        default:
            guard name.hasPrefix("arg"), name.count == 4, let n = Int(name.dropFirst(3)), (0..<6).contains(n) else { return nil }
            return .argument(n)
        }
    }

    private mutating func comparison() -> FilterExpression.Comparison? {
        // Two-character operators first: `<=` is not `<` then `=`.
        for c in [FilterExpression.Comparison.equal, .notEqual, .lessOrEqual, .greaterOrEqual, .less, .greater] where take(c.rawValue) {
            return c
        }
        return nil
    }

    private static let suffixes: [(String, Int64)] = [("ns", 1), ("us", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000),
                                                      ("k", 1_000), ("M", 1_000_000)]

    private mutating func number() throws -> Int64 {
        skipSpaces()
        let start = at
        let negative = take("-")
        skipSpaces()
        let digitsAt = at
        var digits = "", radix = 10
        if at + 1 < chars.count && chars[at] == "0" && (chars[at + 1] == "x" || chars[at + 1] == "X") {
            at += 2
            radix = 16
        }
        while at < chars.count && chars[at].isHexDigit && (radix == 16 || chars[at].isNumber) { digits.append(chars[at]); at += 1 }
        guard !digits.isEmpty else {
            throw error(at < chars.count ? "expected a number, found '\(chars[at])'" : "expected a number before the end", at: digitsAt)
        }
        var scale: Int64 = 1
        let suffixAt = at
        var suffix = ""
        while at < chars.count && chars[at].isLetter { suffix.append(chars[at]); at += 1 }
        if !suffix.isEmpty {
            guard let s = Self.suffixes.first(where: { $0.0 == suffix }) else {
                throw error("unknown suffix '\(suffix)': use k, M (×1000, ×1000000), ns, us, ms or s", at: suffixAt)
            }
            scale = s.1
        }
        let tooBig = error("the number does not fit in 64 bits", at: start)
        guard let magnitude = UInt64(digits, radix: radix) else { throw tooBig }
        // A hex constant may name any 64-bit pattern (an address, a mask); a decimal one is signed.
        let value: Int64
        if negative {
            guard magnitude <= UInt64(1) << 63 else { throw tooBig }
            value = 0 &- Int64(bitPattern: magnitude)
        } else {
            guard radix == 16 || magnitude <= UInt64(Int64.max) else { throw tooBig }
            value = Int64(bitPattern: magnitude)
        }
        let (scaled, overflow) = value.multipliedReportingOverflow(by: scale)
        guard !overflow else { throw tooBig }
        return scaled
    }

    private mutating func string() throws -> String {
        skipSpaces()
        guard peek("\"") else { throw error(at < chars.count ? "expected a \"string\", found '\(chars[at])'" : "expected a \"string\" before the end") }
        let open = at
        at += 1
        var s = ""
        while at < chars.count && chars[at] != "\"" {
            if chars[at] == "\\" && at + 1 < chars.count && (chars[at + 1] == "\"" || chars[at + 1] == "\\") {
                // Only \" and \\ are escapes of the string; any other backslash stays, for the glob
                // (where \* is a literal star).
                at += 1
            }
            s.append(chars[at])
            at += 1
        }
        guard at < chars.count else { throw error("the string opened here is not closed", at: open) }
        at += 1
        // The process compares the first 255 bytes of a string (filter.c's buffer, with one byte
        // to see whether it goes on): a longer literal could never be told from its prefix.
        if s.utf8.count > Self.maxString { throw error("a string of at most \(Self.maxString) bytes", at: open) }
        return s
    }

    static let maxString = 254
}
