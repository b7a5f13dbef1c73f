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

    /// `  12.345678  4242  target:add(2, 3) = 5  (1.2 µs)`; time since attach.
    func text(since start: UInt64) -> String {
        let rel = Double(Int64(bitPattern: timestamp &- start)) / 1e9
        let t = CountTable.lpad(fixed(rel, 6), 12)
        let r = ret.isNone ? "" : " = \(ret.text)"
        let d = nanos.map { "  (\(CountTable.duration($0)))" } ?? ""
        return "\(t) \(CountTable.lpad("\(tid)", 7))  \(function)(\(args.map(\.text).joined(separator: ", ")))\(r)\(d)"
    }

    var json: String {
        "{\"event\":\"call\",\"function\":\(JSON.string(function)),\"tid\":\(tid),\"ts\":\(timestamp),\"args\":[\(args.map(\.json).joined(separator: ","))],\"ret\":\(ret.json),\"ns\":\(nanos.map { "\($0)" } ?? "null")}"
    }
}

extension TracedValue {
    var isNone: Bool { if case .none = self { return true } else { return false } }
}

/// --output FILE.json: the Chrome trace-event format (a JSON object with a traceEvents array of
/// complete "X" events, times in microseconds), which Perfetto and chrome://tracing open.
/// Written as calls arrive, closed at detach.
final class ChromeTrace {
    private let file: UnsafeMutablePointer<FILE>
    private var first = true
    private let pid: pid_t

    init(path: String, pid: pid_t) throws {
        guard let f = fopen(path, "w") else { throw OutputFileError(path: path, errno: errno) }
        file = f
        self.pid = pid
        let comm = (try? ProcFS.read("/proc/\(pid)/comm"))?.trimmingCharacters(in: "\n") ?? "process \(pid)"
        fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n", file)
        write("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":\(pid),\"args\":{\"name\":\(JSON.string(comm))}}")
    }

    func add(_ c: TracedCall) {
        let ts = Double(c.timestamp) / 1000, dur = Double(c.nanos ?? 0) / 1000
        let args = c.args.enumerated().map { "\"arg\($0.offset)\":\($0.element.json)" } + (c.ret.isNone ? [] : ["\"ret\":\(c.ret.json)"])
        write("{\"name\":\(JSON.string(c.function)),\"cat\":\"call\",\"ph\":\"X\",\"ts\":\(fixed(ts, 3)),\"dur\":\(fixed(dur, 3)),\"pid\":\(pid),\"tid\":\(c.tid),\"args\":{\(args.joined(separator: ","))}}")
    }

    private func write(_ s: String) {
        if !first { fputs(",\n", file) }
        first = false
        fputs(s, file)
    }

    func close() {
        fputs("\n]}\n", file)
        fclose(file)
    }
}

struct OutputFileError: Error, CustomStringConvertible {
    let path: String
    let errno: Int32
    var description: String { "cannot write \(path): \(String(cString: strerror(errno)))" }
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
