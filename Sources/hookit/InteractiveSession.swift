import Glibc
import Injector
import RemoteTramp

/// `hookit attach PID --interactive`: commands on stdin, each applied live while the tracee
/// runs; events keep being serviced between commands. End of input detaches. With several
/// processes, every command applies to all of them and each answers for itself (its pid in
/// the reply).
///
///     add HOOK-OPTIONS (--trace, --count, --override, --replace, --prog, as on the command line)
///     remove ID
///     list
///     detach
struct InteractiveSession {
    let processes: ProcessSet
    let output: Output

    /// Runs until `detach`, end of input or a termination signal.
    func run() {
        let prompt = isatty(0) != 0 && !output.json
        var input = LineReader(fd: 0)
        while !Interruption.requested && !processes.sessions.isEmpty {
            if prompt { output.prompt() }
            var line: String?
            var eof = false
            // Wait for a line while servicing the tracee (signals, new threads).
            while !Interruption.requested && !processes.sessions.isEmpty {
                switch input.next(timeoutMs: 50) {
                case .line(let l): line = l
                case .eof: eof = true
                case .none: break
                }
                if line != nil || eof { break }
                processes.service(seconds: 0)
            }
            if eof { return }
            guard let text = line?.trimmingCharacters(in: " \t\r"), !text.isEmpty else { continue }
            if !handle(text) { return }
        }
    }

    /// One command; false when it asks to detach.
    private func handle(_ text: String) -> Bool {
        let words = HookOptionOrder.normalized(commandWords(text))
        do {
            switch words[0] {
            case "add":
                // The same hook options as the command line.
                let specs: HookSpecs
                do { specs = try HookSpecs.parse(Array(words.dropFirst())) } catch {
                    throw CommandError(HookSpecs.message(for: error))
                }
                let requests = try specs.requests(arguments: Array(words.dropFirst()))
                if requests.isEmpty { throw CommandError("add needs --trace, --count, --override, --replace or --prog") }
                try processes.add(requests, text: requests.map(\.text).joined(separator: " "))
            case "remove":
                guard words.count == 2, let id = Int(words[1]) else { throw CommandError("usage: remove ID") }
                try processes.remove(id)
            case "list":
                processes.list()
            case "detach", "quit", "exit":
                return false
            case "help":
                output.help()
            default:
                throw CommandError("unknown command \(words[0]) (add, remove, list, detach, help)")
            }
        } catch {
            output.error("\(error)")
        }
        return true
    }
}

struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Lines from a file descriptor, with a timeout, without blocking the session loop.
struct LineReader {
    enum Result { case line(String), eof, none }
    let fd: Int32
    private var buffer: [UInt8] = []
    private var closed = false

    init(fd: Int32) { self.fd = fd }

    mutating func next(timeoutMs: Int32) -> Result {
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return .line(line)
            }
            if closed {
                if buffer.isEmpty { return .eof }
                let line = String(decoding: buffer, as: UTF8.self)
                buffer.removeAll()
                return .line(line)
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, timeoutMs)
            if r <= 0 { return .none }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { return .none }
            if n <= 0 { closed = true; continue }
            buffer += chunk[..<n]
        }
    }
}
