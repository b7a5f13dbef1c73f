import Glibc
import Injector

/// --output FILE.json: the Chrome trace-event format (a JSON object with a traceEvents array of
/// complete "X" events, times in microseconds), which Perfetto and chrome://tracing open.
///
/// A stream: each call is written (through stdio's buffer) as it arrives and forgotten, so a
/// session of any length holds only the buffer and the set of thread ids it has named. The
/// process and each thread get a metadata event the first time they appear, so Perfetto's
/// tracks read "python3 [1234]" and the thread's own name instead of bare numbers.
final class ChromeTraceWriter {
    private let file: UnsafeMutablePointer<FILE>
    private var first = true
    private let pid: pid_t
    private var namedThreads = Set<UInt32>()

    init(path: String, pid: pid_t) throws {
        guard let f = fopen(path, "w") else { throw OutputFileError(path: path, errno: errno) }
        file = f
        self.pid = pid
        fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n", file)
        metadata("process_name", tid: nil, name: "\(processName(pid)) [\(pid)]")
    }

    func add(_ c: TracedCall) {
        if namedThreads.insert(c.tid).inserted { metadata("thread_name", tid: c.tid, name: threadName(c.tid)) }
        let ts = Double(c.timestamp) / 1000, dur = Double(c.nanos ?? 0) / 1000
        let args = c.args.enumerated().map { "\"arg\($0.offset)\":\($0.element.json)" } + (c.ret.isNone ? [] : ["\"ret\":\(c.ret.json)"])
            + (c.ended == .returned ? [] : ["\"ended\":\"\(c.ended.rawValue)\""])
            + stackArg(c)
        write("{\"name\":\(JSON.string(c.function)),\"cat\":\"call\",\"ph\":\"X\",\"ts\":\(fixed(ts, 3)),\"dur\":\(fixed(dur, 3)),\"pid\":\(pid),\"tid\":\(c.tid),\"args\":{\(args.joined(separator: ","))}}")
    }

    func close() {
        fputs("\n]}\n", file)
        fclose(file)
    }

    /// A thread's comm and id; a thread gone by the time its first call is read keeps its id.
    private func threadName(_ tid: UInt32) -> String {
        let comm = (try? ProcFS.read("/proc/\(pid)/task/\(tid)/comm"))?.trimmingCharacters(in: "\n")
        return "\(comm ?? "thread") [\(tid)]"
    }

    private func metadata(_ kind: String, tid: UInt32?, name: String) {
        write("{\"name\":\"\(kind)\",\"ph\":\"M\",\"pid\":\(pid)" + (tid.map { ",\"tid\":\($0)" } ?? "") + ",\"args\":{\"name\":\(JSON.string(name))}}")
    }

    private func write(_ s: String) {
        if !first { fputs(",\n", file) }
        first = false
        fputs(s, file)
    }
}

struct OutputFileError: Error, CustomStringConvertible {
    let path: String
    let errno: Int32
    var description: String { "cannot write \(path): \(String(cString: strerror(errno)))" }
}

extension ChromeTraceWriter {
    /// --stack: the call's stack as an array in the slice's args (Perfetto lists it there).
    func stackArg(_ c: TracedCall) -> [String] {
        guard let stack = c.stack else { return [] }
        return ["\"stack\":[" + stack.map(JSON.string).joined(separator: ",") + "]"]
    }
}
