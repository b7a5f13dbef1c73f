import Glibc

/// Calls of functions inside the tracee.
extension Tracee {
    /// Calls the function at `address` in the tracee with up to six integer arguments and returns
    /// rax. During the call every other thread runs, so a lock one of them holds (malloc's, the
    /// loader's) is released in due course instead of deadlocking the call. With the world
    /// stopped, it returns with the world stopped again; otherwise only the one lent thread was
    /// ever stopped.
    ///
    /// The call runs on the borrowed thread's stack below its red zone, 16-byte aligned at the
    /// call, with its FP/SSE/AVX state saved around it. On timeout or interruption the thread is
    /// left to finish the call and restore itself (the stub does that without hookit).
    public func call(_ address: UInt64, _ args: [UInt64] = [], name: String? = nil, timeout: Double = 10) throws -> UInt64 {
        precondition(args.count <= 6)
        if !held { return try callOnLentThread(address, args, name: name, timeout: timeout) }
        let label = name ?? "0x\(hex(address))"
        let thread = try pickThread()
        let b = try borrow(thread, entry: .call, arguments: [address] + args)
        let outcome: StubOutcome
        do {
            try resumeWorld()            // everyone but the borrowed thread
            outcome = try runUntilSentinel(b, timeout: timeout)
        } catch {
            if thread.borrowed { abandon(b) }
            if !held { try? stopWorld() }
            throw error
        }
        switch outcome {
        case .finished(let result):
            try restore(b)
            try stopWorld()
            return result
        case .timedOut:
            abandon(b)
            try stopWorld()
            throw InjectorError.remoteCallTimedOut(function: label, tid: thread.tid, seconds: timeout)
        case .interrupted:
            abandon(b)
            try? stopWorld()
            throw InjectorError.remoteCallInterrupted(function: label, tid: thread.tid)
        }
    }

    /// `call` while the world runs: one thread is stopped and lent, the others never stop.
    private func callOnLentThread(_ address: UInt64, _ args: [UInt64], name: String?, timeout: Double) throws -> UInt64 {
        try runStub(on: try lendOneThread(), entry: .call, arguments: [address] + args,
                    label: name ?? "0x\(hex(address))", timeout: timeout)
    }

    /// Runs the stub on `thread` (lent by the caller, or one of the held world's) to its end and
    /// puts the thread back: restored at the sentinel, or left to restore itself (abandon) on a
    /// timeout, an interruption or a failure while it is in the stub. A lent thread goes back
    /// to the running world.
    func runStub(on thread: TraceeThread, entry: StubEntry, arguments: [UInt64], label: String, timeout: Double) throws -> UInt64 {
        let b: Borrowed
        do { b = try borrow(thread, entry: entry, arguments: arguments) }
        catch { if !held { returnLentThread(thread) }; throw error }
        let outcome: StubOutcome
        do { outcome = try runUntilSentinel(b, timeout: timeout) }
        catch {
            if thread.borrowed { abandon(b) } else if !held { returnLentThread(thread) }
            throw error
        }
        switch outcome {
        case .finished(let result):
            try restore(b)
            if !held { returnLentThread(thread) }
            return result
        case .timedOut:
            abandon(b)
            throw InjectorError.remoteCallTimedOut(function: label, tid: thread.tid, seconds: timeout)
        case .interrupted:
            abandon(b)
            throw InjectorError.remoteCallInterrupted(function: label, tid: thread.tid)
        }
    }
}
