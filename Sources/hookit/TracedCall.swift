import Glibc
import Injector
import RemoteTramp

/// A trace event made readable: the function's name, its arguments and return value typed by
/// its signature (hex without one), times in CLOCK_MONOTONIC nanoseconds.
struct TracedCall {
    let function: String
    let tid: UInt32
    let timestamp: UInt64
    let nanos: UInt64?
    let args: [TracedValue]
    let ret: TracedValue
    /// With --stack: the call's stack, innermost first (`module:function+0xOFF`).
    var stack: [String]? = nil

    init(event e: TraceEvent, function: String, signature: Signature?, clock: TickClock) {
        self.function = function
        tid = e.tid
        timestamp = clock.nanoseconds(ticks: e.ticks)
        nanos = e.timed ? TrampolineTable.nanoseconds(ticks: e.durationTicks) : nil
        // The ring holds copies of the first two string values, in argument order, then ret.
        var strings = e.strings[...]
        func value(_ raw: UInt64, _ type: Signature.ValueType) -> TracedValue {
            TracedValue.of(raw, type, string: type == .str ? (strings.popFirst() ?? nil) : nil)
        }
        if let sig = signature {
            args = sig.args.enumerated().map { value(e.args[$0.offset], $0.element) }
            ret = value(e.ret, sig.ret)
        } else {
            args = e.args.map { .hex($0) }
            ret = .hex(e.ret)
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
