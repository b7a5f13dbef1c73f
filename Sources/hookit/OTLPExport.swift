import Injector
import FoundationEssentials
import Glibc

/// --otlp FILE.jsonl: traced calls as OpenTelemetry spans, one ExportTraceServiceRequest per
/// line in OTLP/JSON (the format of the Collector's file exporter and its otlpjsonfile
/// receiver): lowerCamelCase fields, trace and span ids in hex, times as strings of Unix
/// nanoseconds, int64 values as strings, enums as numbers.
///
/// A call's parent is the traced call that encloses it on the same thread, and a whole tree
/// shares the trace id of its outermost call. The ring delivers calls at their return, the
/// innermost first, so the tree is rebuilt per thread from intervals (SpanForest): a span is
/// written once its outermost call is known. Nothing tells hookit that a call has no traced
/// caller still running, so a tree waits until it ended `hold` seconds ago (or until more than
/// `maxWaiting` wait: then all go): a traced call that outlasts that is written without the
/// calls inside it as children.
final class OTLPExport {
    private let file: UnsafeMutablePointer<FILE>
    private let resource: Resource
    private let encoder = JSONEncoder()
    /// The request line up to its spans, and after them: the same for every line.
    private let head: String, tail = "]}]}]}"
    #if DEBUG
    private var checked = 0
    #endif
    private var forest: SpanForest
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, read once: call times are monotonic ns.
    private let unixOffset: Int64

    init(path: String, pid: pid_t, service: String?, hold: Double = 1, maxWaiting: Int = 32_768) throws {
        guard let f = fopen(path, "w") else { throw OutputFileError(path: path, errno: errno) }
        file = f
        let comm = processName(pid)
        resource = Resource(attributes: [
            .init("service.name", .string(service ?? comm)),
            .init("process.pid", .int(Int64(pid))),
            .init("process.executable.name", .string(comm)),
        ])
        forest = SpanForest(hold: hold, maxWaiting: maxWaiting)
        var mono = timespec(), real = timespec()
        clock_gettime(CLOCK_MONOTONIC, &mono)
        clock_gettime(CLOCK_REALTIME, &real)
        unixOffset = (Int64(real.tv_sec) - Int64(mono.tv_sec)) * 1_000_000_000 + Int64(real.tv_nsec) - Int64(mono.tv_nsec)
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let resourceJSON = (try? encoder.encode(resource)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        head = "{\"resourceSpans\":[{\"resource\":\(resourceJSON),\"scopeSpans\":[{\"scope\":{\"name\":\"hookit\"},\"spans\":["
        #if DEBUG
        let empty = Request(resourceSpans: [.init(resource: resource, scopeSpans: [.init(scope: .init(name: "hookit"), spans: [])])])
        assert((try? encoder.encode(empty)).map { String(decoding: $0, as: UTF8.self) } == head + tail, "the request's frame")
        #endif
    }

    func add(_ c: TracedCall) {
        let start = Int64(c.timestamp) + unixOffset
        forest.add(SpanForest.Node(call: c, start: start, end: start + Int64(c.nanos ?? 0), spanID: Self.randomHex(8)))
    }

    /// Spans per request line, at most: lines stay a few MiB for the readers of the file.
    static let spansPerLine = 4096
    private var inLine = 0

    /// Writes the trees that are due (all of them with `everything`), each span as it is made:
    /// nothing but the trees themselves is held.
    func flush(everything: Bool = false) {
        let roots = forest.takeDue(now: Injector.Clock.seconds(), everything: everything)
        if roots.isEmpty { return }
        for root in roots { write(root, parent: nil, trace: Self.randomHex(16)) }
        endLine()
        fflush(file)
    }

    /// The request is written around the spans (what JSONEncoder writes for a Request of this
    /// resource, keys sorted); each span by its fast path, or by JSONEncoder.
    private func write(_ n: SpanForest.Node, parent: String?, trace: String) {
        if inLine == Self.spansPerLine { endLine() }
        fputs(inLine == 0 ? head : ",", file)
        fputs(json(span(n, parent: parent, trace: trace)), file)
        inLine += 1
        for child in n.children { write(child, parent: n.spanID, trace: trace) }
    }

    private func endLine() {
        if inLine > 0 { fputs(tail + "\n", file) }
        inLine = 0
    }

    func close() {
        flush(everything: true)
        fclose(file)
    }

    /// With JSONEncoder for every span --otlp kept up with ~46 k calls a second, with this fast
    /// path ~65 k (the ring drops the rest); it writes the same bytes (checked against
    /// JSONEncoder for the first spans of a session in debug builds, the tests).
    private func json(_ span: Span) -> String {
        let reference = { (try? self.encoder.encode(span)).map { String(decoding: $0, as: UTF8.self) } ?? "{}" }
        guard let fast = span.fastJSON else { return reference() }
        #if DEBUG
        if checked < 256 {
            checked += 1
            assert(fast == reference(), "span \(fast) differs from JSONEncoder's \(reference())")
        }
        #endif
        return fast
    }

    private func span(_ n: SpanForest.Node, parent: String?, trace: String) -> Span {
        let c = n.call
        var attributes: [KeyValue] = [.init("thread.id", .int(Int64(c.tid)))]
        for (i, a) in c.args.enumerated() { attributes.append(.init("hookit.arg\(i)", AnyValue(a))) }
        if !c.ret.isNone { attributes.append(.init("hookit.ret", AnyValue(c.ret))) }
        attributes.append(.init("hookit.ended", .string(c.ended.rawValue)))
        if c.nanos == nil { attributes.append(.init("hookit.untimed", .bool(true))) }
        return Span(traceId: trace, spanId: n.spanID, parentSpanId: parent, name: c.function,
                    startTimeUnixNano: "\(n.start)", endTimeUnixNano: "\(n.end)", attributes: attributes)
    }

    static func randomHex(_ bytes: Int) -> String {
        var s = ""
        for _ in 0..<(bytes / 8) {
            let w = String(UInt64.random(in: 0...UInt64.max), radix: 16)
            s += String(repeating: "0", count: 16 - w.count) + w
        }
        // An all-zero id is invalid in OTLP; 2^-64 or less, but cheap to rule out.
        return s.allSatisfy { $0 == "0" } ? String(s.dropLast()) + "1" : s
    }

    // MARK: - the OTLP/JSON shapes (opentelemetry-proto: collector/trace/v1, trace/v1, common/v1)

    struct Request: Encodable { let resourceSpans: [ResourceSpans] }
    struct ResourceSpans: Encodable { let resource: Resource, scopeSpans: [ScopeSpans] }
    struct Resource: Encodable { let attributes: [KeyValue] }
    struct ScopeSpans: Encodable { let scope: Scope, spans: [Span] }
    struct Scope: Encodable { let name: String }

    struct Span: Encodable {
        let traceId: String
        let spanId: String
        let parentSpanId: String?
        let name: String
        /// SPAN_KIND_INTERNAL: a call inside the process.
        var kind = 1
        let startTimeUnixNano: String
        let endTimeUnixNano: String
        let attributes: [KeyValue]

        /// Keys in JSONEncoder's sorted order; nil when a string needs escaping.
        var fastJSON: String? {
            guard plainJSON(name) else { return nil }
            var attrs = ""
            for (i, a) in attributes.enumerated() {
                guard let j = a.fastJSON else { return nil }
                attrs += i == 0 ? j : "," + j
            }
            let parent = parentSpanId.map { ",\"parentSpanId\":\"\($0)\"" } ?? ""
            return "{\"attributes\":[\(attrs)],\"endTimeUnixNano\":\"\(endTimeUnixNano)\",\"kind\":\(kind),\"name\":\"\(name)\"\(parent),\"spanId\":\"\(spanId)\",\"startTimeUnixNano\":\"\(startTimeUnixNano)\",\"traceId\":\"\(traceId)\"}"
        }
    }

    struct KeyValue: Encodable {
        var fastJSON: String? {
            let v: String
            switch value {
            case .int(let n): v = "{\"intValue\":\"\(n)\"}"
            case .string(let s): guard plainJSON(s) else { return nil }; v = "{\"stringValue\":\"\(s)\"}"
            case .bool(let b): v = "{\"boolValue\":\(b)}"
            case .empty: v = "{}"
            }
            return plainJSON(key) ? "{\"key\":\"\(key)\",\"value\":\(v)}" : nil
        }

        let key: String
        let value: AnyValue
        init(_ key: String, _ value: AnyValue) { self.key = key; self.value = value }
    }

    enum AnyValue: Encodable {
        case int(Int64), string(String), bool(Bool), empty

        /// Values above Int64.max (pointers never are) keep their bits.
        init(_ v: TracedValue) {
            switch v {
            case .signed(let n): self = .int(n)
            case .unsigned(let n), .hex(let n), .octal(let n): self = .int(Int64(bitPattern: n))
            case .char(let c): self = .int(Int64(c))
            case .string(let s): self = .string(s)
            case .bool(let b): self = .bool(b)
            case .null, .none: self = .empty
            }
        }

        enum CodingKeys: String, CodingKey { case intValue, stringValue, boolValue }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            switch self {
            case .int(let n): try c.encode("\(n)", forKey: .intValue)   // int64: a JSON string
            case .string(let s): try c.encode(s, forKey: .stringValue)
            case .bool(let b): try c.encode(b, forKey: .boolValue)
            case .empty: break
            }
        }
    }
}

/// A string JSON writes as it is: printable ASCII without a quote or a backslash.
func plainJSON(_ s: String) -> Bool { s.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7f && $0 != 0x22 && $0 != 0x5c } }
