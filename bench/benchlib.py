"""Shared pieces of the benchmark: the target process and hookit sessions."""
import json
import os
import signal
import statistics
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "testtargets", "build")


class Target:
    """testtargets/build/benchtarget, driven over stdin/stdout (see testtargets/bench.c)."""

    def __init__(self, name="benchtarget"):
        self.path = os.path.join(BUILD, name)
        self.proc = subprocess.Popen([self.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = self.proc.stdout.readline()
        assert ready.startswith("ready"), ready
        self.pid = self.proc.pid

    def send(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def ns_per_call(self, threads, calls=2_000_000, repeats=5, after_run=None):
        """Median over `repeats` runs of the slowest thread's time per call. A run the target
        found wrong ("FAIL ...": a limit stub that did not count every call) raises.
        after_run(total_calls), if given, is called after each run (to let hookit catch up)."""
        samples = []
        for _ in range(repeats):
            answer = self.send(f"run {calls} {threads}")
            if not answer[:1].isdigit():
                raise RuntimeError(f"benchtarget: {answer}")
            samples.append(float(answer.split()[0]))
            if after_run:
                after_run(int(answer.split()[1]))
        return statistics.median(samples)

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def close(self):
        try:
            self.send("quit")
        except Exception:
            pass
        self.proc.kill()
        self.proc.wait()


class HookitSession:
    """`hookit attach PID ... --json` in the background, from spawn to the 'attached' event.

    With read_trace, a thread reads hookit's output while attached and counts the traced calls
    (wait_traced), so hookit never stops reading its trace ring for want of a reader."""

    def __init__(self, hookit, pid, args, read_trace=False):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([hookit, "attach", str(pid), "--json"] + args,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("hookit attach failed: " + self.proc.stderr.read())
            ev = json.loads(line)
            self.events.append(ev)
            if ev["event"] == "attached":
                self.attached = ev
                break
        self.attach_s = time.monotonic() - self.t0
        self.traced = 0    # call lines hookit printed (read_trace)
        self.expected = 0  # traced calls made (all_printed)
        self._reader = None
        if read_trace:
            self._cond = threading.Condition()
            self._reader = threading.Thread(target=self._read_trace, daemon=True)
            self._reader.start()

    def _read_trace(self):
        # Large reads, and only the call lines counted, not parsed: this reader must stay ahead
        # of hookit, which stops reading its ring for good once 8 MiB of output wait unread.
        fd = self.proc.stdout.fileno()
        rest = b""
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            calls = 0
            for line in lines:
                if line.startswith(b'{"event":"call"'):
                    calls += 1
                elif line.startswith(b"{"):
                    self.events.append(json.loads(line))
            with self._cond:
                self.traced += calls
                self._cond.notify_all()

    def wait_traced(self, total, timeout=30):
        """Waits until hookit has printed `total` traced calls; False if it did not in time."""
        with self._cond:
            return self._cond.wait_for(lambda: self.traced >= total, timeout)

    def all_printed(self, calls, nudge, timeout=20):
        """Adds `calls` traced calls to those expected and waits until hookit has printed every
        one. hookit writes out what it holds only when it has more to write, so until then
        nudge() (one more traced call) runs every 20 ms. Returns the nudges."""
        self.expected += calls
        deadline = time.monotonic() + timeout
        nudges = 0
        while not self.wait_traced(self.expected, timeout=0.02) and time.monotonic() < deadline:
            nudge()
            self.expected += 1
            nudges += 1
        return nudges

    def detach(self):
        t = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        if self._reader:
            self.proc.wait(timeout=120)
            self._reader.join(timeout=120)
            out, err = "", self.proc.stderr.read()
        else:
            out, err = self.proc.communicate(timeout=120)
        self.detach_s = time.monotonic() - t
        self.events += [json.loads(l) for l in out.splitlines() if l.startswith("{")]
        self.detached = self.events[-1]
        self.stats = [e for e in self.events if e["event"] == "stats"]
        if self.proc.returncode != 0:
            raise RuntimeError(f"hookit exited {self.proc.returncode}: {err}")
        return self
