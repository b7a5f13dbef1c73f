"""Shared pieces of the benchmark: the target process and hookit sessions."""
import json
import os
import signal
import statistics
import subprocess
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

    def ns_per_call(self, threads, calls=2_000_000, repeats=5):
        """Median over `repeats` runs of the slowest thread's time per call."""
        samples = [float(self.send(f"run {calls} {threads}").split()[0]) for _ in range(repeats)]
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
    """`hookit attach PID ... --json` in the background, from spawn to the 'attached' event."""

    def __init__(self, hookit, pid, args):
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

    def detach(self):
        t = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=120)
        self.detach_s = time.monotonic() - t
        self.events += [json.loads(l) for l in out.splitlines() if l.startswith("{")]
        self.detached = self.events[-1]
        self.stats = [e for e in self.events if e["event"] == "stats"]
        if self.proc.returncode != 0:
            raise RuntimeError(f"hookit exited {self.proc.returncode}: {err}")
        return self
