"""The "pause seen by the process" table of the benchmark.

A probe thread of benchtarget (`probe start`, testtargets/bench.c) spins on CLOCK_MONOTONIC and
keeps the longest gap between two of its iterations; it calls nothing that is hooked, so the gap
is the time the process was kept from running, not the cost of a hook. The figure comes from the
target itself, not from hookit's report.

A window is: `probe read` (reset), attach (hookit: until its `attached` event), 0.3 s hooked,
detach (hookit: SIGINT and wait for it to exit), `probe read` (the window's worst gap). Every row
has three windows; each hookit and Frida window is the first attach of a fresh target, so the
load of hookit's runtime library (Frida: its agent) into the process is in it. Interactive rows
are one `hookit attach --interactive` session on one fresh target, each window holding exactly
one `add` or one `remove`. The baseline row's windows have nothing attached and last as long as
a typical hooked window.

    rows(hookit, frida=None | "unavailable reason" | False, quick=False) -> [row]
    render(rows, machine) -> str

Every function leaves no hookit or Frida session behind and closes the targets it started; a
row that fails is returned with a note instead of raising.
"""
import json
import os
import queue
import signal
import statistics
import subprocess
import threading
import time

from benchlib import BUILD, HookitSession, Target

PROGS = os.path.join(BUILD, "libbenchprogs.so")
HOOKED_S = 0.3          # time hooked in each window
WINDOWS = 3             # windows per row
IDLE_THREADS = 399      # with the main thread: 400 threads besides the probe
WINDOW_TIMEOUT_S = 300  # a window that takes longer kills its target (so hookit exits too)

# The goals of the issue, in ms, by kind of row.
GOAL_ONE_FN = 1.0
GOAL_CHANGE = 1.0
GOAL_2000 = 5.0
GOAL_10000 = 25.0
GOAL_THREADS = 10.0

_PATTERNS = {
    2000: ["many_?", "many_??", "many_???", "many_1???"],
    10000: ["many_*"],
}

# Frida 17 CModule onEnter on many functions (the 1-function row uses peers._FRIDA_CMODULE).
_FRIDA_CMODULE_MANY = r"""
const names = NAMES;
const counter = Memory.alloc(8);
const cm = new CModule(`
#include <gum/guminterceptor.h>
extern volatile gint counter;
void onEnter(GumInvocationContext *ic) { g_atomic_int_add(&counter, 1); }
`, { counter });
const all = new Map();
for (const e of Process.mainModule.enumerateExports()) all.set(e.name, e.address);
for (const name of names) Interceptor.attach(all.get(name), cm);
rpc.exports = { calls() { return counter.readU32(); } };
"""


def _short(text, limit=200):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the target and its probe -------------------------------------------------------------------

class _ProbedTarget:
    """A fresh benchtarget with `idle` sleeping threads and the probe running. A watchdog kills
    the target if the window it serves takes longer than WINDOW_TIMEOUT_S (hookit, ptrace-attached
    to it, then exits), so a hung tool cannot hang the bench."""

    def __init__(self, idle=0):
        self.target = Target()
        self.timed_out = False
        self._timer = threading.Timer(WINDOW_TIMEOUT_S, self._expire)
        self._timer.daemon = True
        self._timer.start()
        try:
            if idle:
                answer = self.target.send(f"idle {idle}")
                if answer != f"idle {idle}":
                    raise RuntimeError(f"idle {idle} answered {answer!r}")
                self._wait_threads(idle + 1)
            answer = self.target.send("probe start")
            if not answer.startswith("probe started"):
                raise RuntimeError(f"probe start answered {answer!r}")
            self.nice = int(answer.split()[-1])
            self.read()  # reset
        except BaseException:
            self.close()
            raise

    @property
    def pid(self):
        return self.target.pid

    def _expire(self):
        self.timed_out = True
        try:
            self.target.proc.kill()
        except Exception:
            pass

    def _wait_threads(self, n, timeout=30):
        deadline = time.monotonic() + timeout
        while len(os.listdir(f"/proc/{self.pid}/task")) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"target has fewer than {n} threads after {timeout} s")
            time.sleep(0.01)

    def threads(self):
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def read(self):
        """The probe's longest gap (ms) since the last read; resets it."""
        answer = self.target.send("probe read")
        parts = answer.split()
        if len(parts) != 2:
            raise RuntimeError(("target timed out" if self.timed_out else "target stopped answering")
                               + f" (probe read answered {answer!r})")
        gap_ns, iterations = int(parts[0]), int(parts[1])
        if iterations <= 0:
            raise RuntimeError("the probe did not run")
        return gap_ns / 1e6

    def close(self):
        self._timer.cancel()
        self.target.close()


def _check_target_detached(pt):
    """No tracer left on the target (a window must leave it running and free)."""
    with open(f"/proc/{pt.pid}/status") as f:
        for line in f:
            if line.startswith("TracerPid:") and int(line.split()[1]) != 0:
                raise RuntimeError(f"target still traced by {line.split()[1]} after detach")


# --- one window -----------------------------------------------------------------------------------

def _hookit_window(hookit, args, functions, idle=0):
    pt = _ProbedTarget(idle)
    session = None
    try:
        threads = pt.threads() - 1  # besides the probe
        pt.read()
        t0 = time.monotonic()
        session = HookitSession(hookit, pt.pid, args)
        if session.attached["functions"] != functions:
            raise RuntimeError(f"hookit hooked {session.attached['functions']} functions, expected {functions}")
        time.sleep(HOOKED_S)
        s, session = session, None
        s.detach()
        gap = pt.read()
        window_s = time.monotonic() - t0
        if s.detached.get("event") != "detached":
            raise RuntimeError(f"hookit's last event is {s.detached.get('event')!r}, not detached")
        _check_target_detached(pt)
        return {"gap_ms": gap, "window_s": window_s, "threads": threads, "nice": pt.nice,
                "hookit_attach_ms": s.attached["longest_stop_ns"] / 1e6,
                "hookit_session_ms": s.detached["longest_stop_ns"] / 1e6}
    finally:
        if session is not None:
            _stop_hookit(session.proc)
        pt.close()


def _stop_hookit(proc):
    """Detach a hookit that is still attached (SIGINT: it restores and detaches), else kill it."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)
        except Exception:
            proc.kill()
            proc.wait()


def _baseline_window(seconds):
    pt = _ProbedTarget()
    try:
        threads = pt.threads() - 1
        pt.read()
        t0 = time.monotonic()
        time.sleep(seconds)
        gap = pt.read()
        return {"gap_ms": gap, "window_s": time.monotonic() - t0, "threads": threads, "nice": pt.nice}
    finally:
        pt.close()


def _frida_window(functions):
    import peers
    names = ["bench_fn"] if functions == 1 else [f"many_{i}" for i in range(functions)]
    source = peers._FRIDA_CMODULE if functions == 1 else _FRIDA_CMODULE_MANY.replace("NAMES", repr(names))
    pt = _ProbedTarget()
    fs = None
    try:
        threads = pt.threads() - 1
        entries = peers._Entries(pt.target, names)
        pt.read()
        t0 = time.monotonic()
        fs = peers._FridaScript(pt.pid, source)
        entries.wait_patched(functions, 60)
        time.sleep(HOOKED_S)
        f, fs = fs, None
        f.close()
        if not entries.wait_restored(60):
            raise RuntimeError(f"{entries.patched()} entries still patched after Frida's detach")
        gap = pt.read()
        return {"gap_ms": gap, "window_s": time.monotonic() - t0, "threads": threads, "nice": pt.nice}
    finally:
        if fs is not None:
            fs.close()
        pt.close()


# --- interactive ------------------------------------------------------------------------------------

class _Interactive:
    """`hookit attach PID --interactive --json`: commands on stdin, one JSON event per line."""

    def __init__(self, hookit, pid, extra=()):
        self.proc = subprocess.Popen([hookit, "attach", str(pid), "--interactive", "--json", *extra],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.lines = queue.Queue()
        self.err = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()
        self.attached = self.wait("attached")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait(self, kind, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no {kind} event from hookit within {timeout} s")
            if line is None:
                self.proc.wait()
                raise RuntimeError(f"hookit exited {self.proc.returncode} before {kind}: " + _short("".join(self.err)))
            if not line.startswith("{"):
                continue
            ev = json.loads(line)
            if ev["event"] == "error":
                raise RuntimeError("hookit: " + ev.get("message", "?"))
            if ev["event"] == kind:
                return ev

    def command(self, text, kind):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.wait(kind)

    def detach(self):
        """`detach`, then hookit restores everything and exits; returns its detached event."""
        ev = self.command("detach", "detached")
        self.proc.stdin.close()
        self.proc.wait(timeout=120)
        if self.proc.returncode != 0:
            raise RuntimeError(f"hookit exited {self.proc.returncode}: " + _short("".join(self.err)))
        return ev

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # end of input detaches too
            except Exception:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _stop_hookit(self.proc)


INTERACTIVE_ADD = "add --count benchtarget:bench_fn"


def _interactive_rows(hookit, windows):
    """Two rows (add, remove) from one session on one fresh target: after it is attached (no
    hooks) and settled, windows alternate add, remove; each holds exactly one change."""
    add = _row("hookit", "interactive: one add (per change)", 1, GOAL_CHANGE, frida_size=1)
    rem = _row("hookit", "interactive: one remove (per change)", 1, GOAL_CHANGE, frida_size=1)
    add["note"] = note = f"`{INTERACTIVE_ADD}`"
    rem["note"] = "`remove ID` of that add"
    try:
        pt = _ProbedTarget()
    except Exception as e:
        add["note"] = rem["note"] = _short(f"failed: {e}")
        return [add, rem]
    session = None
    try:
        threads = pt.threads() - 1
        session = _Interactive(hookit, pt.pid, ["--no-time"])
        if session.attached["functions"] != 0:
            raise RuntimeError(f"interactive session attached {session.attached['functions']} functions, expected 0")
        time.sleep(HOOKED_S)  # settle
        for _ in range(windows):
            pt.read()
            t0 = time.monotonic()
            ev = session.command(INTERACTIVE_ADD, "added")
            if ev["functions"] != 1:
                raise RuntimeError(f"add hooked {ev['functions']} functions, expected 1")
            time.sleep(HOOKED_S)
            add["windows"].append({"gap_ms": pt.read(), "window_s": time.monotonic() - t0, "threads": threads,
                                   "nice": pt.nice, "hookit_attach_ms": ev["stopped_ns"] / 1e6})
            pt.read()
            t0 = time.monotonic()
            session.command(f"remove {ev['id']}", "removed")
            time.sleep(HOOKED_S)
            rem["windows"].append({"gap_ms": pt.read(), "window_s": time.monotonic() - t0, "threads": threads,
                                   "nice": pt.nice})
        s, session = session, None
        s.detach()
        _check_target_detached(pt)
        pt.read()
    except Exception as e:
        failed = _short(f"failed: {e}")
        for r in (add, rem):
            r["note"] = failed if not r["windows"] else f"{r['note']}; {failed}"
    finally:
        if session is not None:
            session.stop()
        pt.close()
    return [add, rem]


# --- rows -----------------------------------------------------------------------------------------

def _row(tool, name, functions, goal, frida_size=None, threads=None):
    return {"tool": tool, "row": name, "functions": functions, "goal_ms": goal, "frida_size": frida_size,
            "windows": [], "note": "", "threads": threads}


def _run_windows(row, windows, window):
    for i in range(windows):
        try:
            row["windows"].append(window())
        except Exception as e:
            row["note"] = _short(f"failed in window {i + 1}: {e}")
            break
    return row


def rows(hookit, frida=False, quick=False):
    """All rows. frida: False to leave Frida out, None if it is usable, else why it is not."""
    windows = 1 if quick else WINDOWS
    one = [
        ("--count --no-time", ["--no-time", "--count", "benchtarget:bench_fn"]),
        ("--count", ["--count", "benchtarget:bench_fn"]),
        ("--trace", ["--trace", "benchtarget:bench_fn"]),
        ("--override", ["--override", "benchtarget:bench_fn=0"]),
        ("--prog fentry C program", ["--prog", f"fentry:benchtarget:bench_fn={PROGS}:bench_noop"]),
    ]
    out = []
    for name, args in one:
        out.append(_run_windows(_row("hookit", f"1 function, {name}", 1, GOAL_ONE_FN, frida_size=1), windows,
                                lambda args=args: _hookit_window(hookit, args, 1)))
    out += _interactive_rows(hookit, windows)
    for n in (2000,) if quick else (2000, 10000):
        args = []
        for p in _PATTERNS[n]:
            args += ["--prog", f"fentry:benchtarget:{p}=count"]
        r = _row("hookit", f"{n} functions, --prog ...=count", n, GOAL_2000 if n == 2000 else GOAL_10000,
                 frida_size=2000 if n == 2000 else None)
        out.append(_run_windows(r, windows, lambda args=args, n=n: _hookit_window(hookit, args, n)))
    if not quick:
        r = _row("hookit", f"1 function, {IDLE_THREADS + 1} threads, --count --no-time", 1, GOAL_THREADS)
        out.append(_run_windows(r, windows, lambda: _hookit_window(
            hookit, ["--no-time", "--count", "benchtarget:bench_fn"], 1, idle=IDLE_THREADS)))
    if frida is not False:
        for n in (1, 2000):
            r = _row("frida", f"{n} function{'s' if n > 1 else ''}, CModule Interceptor.attach", n, None)
            if frida is not None:
                r["note"] = f"unavailable: {frida}"
            else:
                _run_windows(r, windows, lambda n=n: _frida_window(n))
            out.append(r)
    # Baseline: nothing attached, as long as a typical hooked window of this run.
    durations = [w["window_s"] for r in out if r["tool"] == "hookit" for w in r["windows"]]
    seconds = min(statistics.median(durations), 5.0) if durations else HOOKED_S + 0.2
    base = _row("baseline", f"nothing attached ({seconds:.2f} s windows)", 0, None)
    out.insert(0, _run_windows(base, windows, lambda: _baseline_window(seconds)))
    _judge(out)
    return out


def failed(error):
    """The table when rows() itself failed (a bug of this file must not take the bench down)."""
    r = _row("hookit", "pause table", 0, None)
    r["note"] = _short(f"failed: {error}")
    _judge([r])
    return [r]


def _judge(rows_):
    """Worst window and whether the row meets its goals (the issue's, and never above Frida's row
    of the same size, when that row was measured)."""
    for r in rows_:
        r["worst_ms"] = max((x["gap_ms"] for x in r["windows"]), default=None)
    frida = {r["functions"]: r for r in rows_ if r["tool"] == "frida"}
    for r in rows_:
        w = [x["gap_ms"] for x in r["windows"]]
        complete = bool(w) and "failed" not in r["note"]
        if r["threads"] is None and r["windows"]:
            r["threads"] = r["windows"][0]["threads"]
        r["met"] = None
        goal = []
        if r["goal_ms"] is not None:
            goal.append(f"<={r['goal_ms']:g}")
        fr = frida.get(r["frida_size"]) if r["frida_size"] else None
        if r["frida_size"] and r["tool"] == "hookit":
            goal.append("<=frida")
        r["goal"] = ", ".join(goal) or "-"
        if r["goal_ms"] is None or not w or not complete:
            continue
        met = r["worst_ms"] <= r["goal_ms"]
        if fr is not None and fr["worst_ms"] is not None:
            met = met and r["worst_ms"] <= fr["worst_ms"]
        r["met"] = met


def _fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def _per_window(r, key):
    v = [x.get(key) for x in r["windows"]]
    return "-" if all(x is None for x in v) else "/".join(_fmt(x, 1) for x in v)


def render(rows_, machine):
    out = []
    out.append("Pause seen by the process (ms): the longest gap between two iterations of a probe thread inside the target")
    load = "?"
    try:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        pass
    nice = sorted({w["nice"] for r in rows_ for w in r["windows"] if "nice" in w})
    out.append(f"machine: {machine}; load average {load}; probe thread nice {','.join(map(str, nice)) or '?'}")
    out.append(f"{'tool':<9} {'row':<46} {'thr':>4} {'worst':>8} {'win 1':>8} {'win 2':>8} {'win 3':>8}  "
               f"{'hk attached 1/2/3':<18} {'hk session 1/2/3':<18} {'goal':<12} {'met':<4} note")
    for r in rows_:
        w = [x["gap_ms"] for x in r["windows"]] + [None] * (WINDOWS - len(r["windows"]))
        met = "-" if r["met"] is None else "yes" if r["met"] else "NO"
        line = (f"{r['tool']:<9} {r['row']:<46} {r['threads'] if r['threads'] is not None else '-':>4} "
                f"{_fmt(r['worst_ms']):>8} " + " ".join(f"{_fmt(x):>8}" for x in w[:WINDOWS]) +
                f"  {_per_window(r, 'hookit_attach_ms'):<18} {_per_window(r, 'hookit_session_ms'):<18} "
                f"{r['goal']:<12} {met:<4} {r['note']}")
        out.append(line.rstrip())
    if not any(r["tool"] == "frida" for r in rows_):
        out.append("(no Frida rows: `make bench-peers` adds them; the <=frida goals are then checked too)")
    out.append("Each hookit and Frida window is the first attach of a fresh benchtarget (hookit's runtime library, "
               "Frida's agent load included): probe reset, attach (hookit: until its `attached` event; Frida: "
               f"frida.attach + script load until every entry is patched), {HOOKED_S} s hooked, detach (hookit: SIGINT "
               "until it exits; Frida: unload + detach until every entry is restored), probe read. Nothing calls the "
               "hooked functions during a window. Interactive rows: one `hookit attach --interactive --json --no-time` "
               "session on one fresh target, attached with no hooks and settled; its windows alternate one add and one "
               f"remove (probe reset, the command until hookit answers, {HOOKED_S} s, probe read).")
    out.append("worst: the worst of the windows; thr: threads of the target besides the probe; hk attached: hookit's "
               "own longest_stop_ns from its `attached` event in each window (interactive add: the add's stopped_ns); "
               "hk session: longest_stop_ns of its `detached` event (the whole session, detach included); goal: the "
               "issue's, in ms; <=frida: not above Frida's row with as many functions. The baseline row is the noise "
               "floor of this machine at this time: no row can measure below it.")
    return "\n".join(out)
