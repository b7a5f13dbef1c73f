import FoundationEssentials

/// One JSON line per event: `{"event":NAME, ...the payload's fields, sorted}`. The event's
/// name comes first so that lines can be told apart with a prefix match (grep '^{"event":"call"');
/// the rest is sorted so that a line's text depends on its values only.
///
/// JSONEncoder writes every event. A `call` line, the one event that comes thousands of times
/// a second, is written by `Event.Call.fastLine` when its strings need no escaping: JSONEncoder
/// takes ~6 µs a line, 10 times the whole of the rest of a call's way through hookit, and the
/// trace ring drops what hookit does not read in time. Debug builds (the tests) check the
/// fast line against JSONEncoder's for the first calls of every session.
final class EventEncoder {
    private let encoder: JSONEncoder
    #if DEBUG
    private var checked = 0
    #endif

    init() {
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        // A mean of an empty interval is 0, never NaN; this only keeps a bad value from failing a line.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    }

    func line(_ event: Event) -> String {
        if case .call(let c) = event, let fast = c.fastLine {
            #if DEBUG
            if checked < 256 {
                checked += 1
                let reference = encoded(event)
                assert(fast == reference, "call line \(fast) differs from JSONEncoder's \(reference)")
            }
            #endif
            return fast
        }
        return encoded(event)
    }

    private func encoded(_ event: Event) -> String {
        let body: [UInt8]
        do { body = Array(try encoder.encode(event.payload)) } catch {
            // Only a non-finite float could fail, and those are converted above.
            return "{\"event\":\"error\",\"fatal\":false,\"message\":\"cannot encode a \(event.name) event\"}"
        }
        let head = "{\"event\":\"\(event.name)\""
        // body is "{}" or "{...}": splice its fields after the name.
        return body.count <= 2 ? head + "}" : head + "," + String(decoding: body.dropFirst(), as: UTF8.self)
    }
}

extension Event.Call {
    /// The line JSONEncoder would write (keys sorted: args, ended, function, ns, pid, ret, tid, ts), or nil
    /// when a string would need escaping (then JSONEncoder writes it).
    var fastLine: String? {
        func value(_ v: TracedValue) -> String? {
            switch v {
            case .signed(let n): return "\(n)"
            case .unsigned(let n), .hex(let n), .octal(let n): return "\(n)"
            case .char(let c): return "\(c)"
            case .string(let s): return plainJSON(s) ? "\"\(s)\"" : nil
            case .bool(let b): return b ? "true" : "false"
            case .null, .none: return "null"
            }
        }
        guard stack == nil, plainJSON(function), let ret = value(ret) else { return nil }
        var args = ""
        for (i, a) in self.args.enumerated() {
            guard let v = value(a) else { return nil }
            args += i == 0 ? v : "," + v
        }
        return "{\"event\":\"call\",\"args\":[\(args)],\"ended\":\"\(ended)\",\"function\":\"\(function)\",\"ns\":\(ns.map { "\($0)" } ?? "null")\(pid.map { ",\"pid\":\($0)" } ?? ""),\"ret\":\(ret),\"tid\":\(tid),\"ts\":\(ts)}"
    }
}

/// A traced argument or return value in JSON: a number (hex, octal and char values too: their
/// look is the text's business), a string, a bool, or null (a NULL string, or no value: void).
extension TracedValue: Codable {
    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .signed(let n): try c.encode(n)
        case .unsigned(let n), .hex(let n), .octal(let n): try c.encode(n)
        case .char(let ch): try c.encode(ch)
        case .string(let s): try c.encode(s)
        case .bool(let b): try c.encode(b)
        case .null, .none: try c.encodeNil()
        }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Int64.self) { self = n < 0 ? .signed(n) : .unsigned(UInt64(n)) }
        else if let n = try? c.decode(UInt64.self) { self = .unsigned(n) }
        else { self = .string(try c.decode(String.self)) }
    }
}
