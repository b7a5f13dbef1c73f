import Glibc
import Injector
import RemoteTramp

/// A traced call made readable: the function's name, its arguments and return value typed by
/// its signature (hex without one), times in CLOCK_MONOTONIC nanoseconds, and how it ended.
struct TracedCall {
    let function: String
    let tid: UInt32
    let timestamp: UInt64
    /// From its entry to where it ended.
    let nanos: UInt64?
    let args: [TracedValue]
    /// `.none` for a call that did not return (or returns void).
    let ret: TracedValue
    let ended: EndedCall.Ending
    /// With --stack: the call's stack, innermost first (`module:function+0xOFF`).
    var stack: [String]? = nil

    init(_ c: EndedCall, function: String, signature: Signature?, clock: TickClock) {
        self.function = function
        tid = c.entry.tid
        ended = c.ending
        timestamp = clock.nanoseconds(ticks: c.entry.ticks)
        nanos = c.ending == .unknown ? nil : TrampolineTable.nanoseconds(ticks: c.endTicks &- c.entry.ticks)
        // The entry copied the string arguments, in order; the end, a string return value.
        var strings = c.entry.strings[...]
        func value(_ raw: UInt64, _ type: Signature.ValueType) -> TracedValue {
            TracedValue.of(raw, type, string: type == .str ? (strings.popFirst() ?? nil) : nil)
        }
        let args = c.entry.args.count == 6 ? c.entry.args : Array(repeating: 0, count: 6)
        if let sig = signature {
            self.args = sig.args.enumerated().map { value(args[$0.offset], $0.element) }
            strings = c.end?.strings[...] ?? []
            ret = c.end.map { value($0.ret, sig.ret) } ?? .none
        } else {
            self.args = args.map { .hex($0) }
            ret = c.end.map { .hex($0.ret) } ?? .none
        }
    }
}

extension TracedValue {
    var isNone: Bool { if case .none = self { return true } else { return false } }
}

/// `v` with `digits` decimals (no Foundation here).
func fixed(_ v: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let n = Int64((abs(v) * scale).rounded())
    let whole = n / Int64(scale), frac = n % Int64(scale)
    let f = String(frac)
    return (v < 0 && n != 0 ? "-" : "") + "\(whole)" + (digits > 0 ? "." + String(repeating: "0", count: digits - f.count) + f : "")
}

/// TSC ticks (the runtime's clock) to CLOCK_MONOTONIC nanoseconds, from one reading of both.
struct TickClock {
    let ticks0: UInt64
    let nanos0: UInt64

    init() {
        ticks0 = TimeStampCounter.now()
        nanos0 = Clock.now()
    }

    func nanoseconds(ticks: UInt64) -> UInt64 {
        let delta = Int64(bitPattern: ticks &- ticks0)
        let ns = Double(delta) * 1e9 / TrampolineTable.tscHz
        return UInt64(max(0, Int64(nanos0) + Int64(ns)))
    }

    var elapsedSeconds: Double { Double(Clock.now() - nanos0) / 1e9 }
}
