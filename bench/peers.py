"""Peer-tool rows of the benchmark: kernel uprobes (bpftrace), Frida (JS and CModule onEnter)
and ltrace, measured against the same benchtarget as hookit.

    tools()                      -> {"bpftrace": None | why, "frida": ..., "ltrace": ...}
    per_call_rows(target, (1,2)) -> [{"tool", "threads", "ns_per_call", "calls_seen", "note"}]
    attach_rows(target, (2000,)) -> [{"tool", "functions", "attach_s", "note"}]

Every function leaves the target running and unhooked, kills what it spawned, and turns a
tool's failure into a row with None values and a note instead of raising.
"""
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

# Wall time one `run` should take under each tool; N is derived from a warm-up measurement.
RUN_SECONDS = 1.0
# Calls per run: (minimum, maximum) for each tool, so a run takes ~0.5-3 s.
CALLS = {
    "bpftrace": (20_000, 200_000),
    "frida-js": (50_000, 1_000_000),
    "frida-cmodule": (200_000, 4_000_000),
    "ltrace": (2_000, 20_000),
}
REPEATS = 5
BPFTRACE_DETACH_TIMEOUT = 1200  # 0.17 detaches one perf event at a time (~0.1 s each here)

_tools_cache = None


# --- helpers --------------------------------------------------------------------------------

def _short(text, limit=160):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _stderr_reason(err):
    lines = [l for l in (err or "").splitlines() if l.strip() and "RLIMIT_MEMLOCK" not in l]
    return _short(lines[-1] if lines else "no output")


def _kill(proc, sig=signal.SIGINT, timeout=30):
    """Stop a child we spawned: `sig`, then SIGKILL if it does not exit. Returns (out, err)."""
    if proc is None:
        return "", ""
    if proc.poll() is not None:
        try:
            return proc.communicate(timeout=5)
        except Exception:
            return "", ""
    try:
        proc.send_signal(sig)
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            return proc.communicate(timeout=30)
        except Exception:
            return "", ""
    except Exception:
        try:
            proc.kill()
            proc.wait(timeout=30)
        except Exception:
            pass
        return "", ""


def _symbols(path):
    """{name: st_value} of the defined function symbols of an ELF file (nm)."""
    out = subprocess.run(["nm", "--defined-only", path], capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "Tt":
            syms[parts[2]] = int(parts[0], 16)
    return syms


def _load_bias(pid, path):
    """Address the file's offset 0 is mapped at in the process (PIE: its load bias)."""
    real = os.path.realpath(path)
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == real and int(fields[2], 16) == 0:
                return int(fields[0].split("-")[0], 16)
    raise RuntimeError(f"{real} is not mapped in {pid}")


class _Entries:
    """First byte of some functions of the target, read through /proc/PID/mem: tells whether a
    tool has patched them (int3 for uprobes and ltrace, a jmp for Frida)."""

    def __init__(self, target, names):
        syms = _symbols(target.path)
        bias = _load_bias(target.pid, target.path)
        self.pid = target.pid
        self.addrs = [bias + syms[n] for n in names]
        self.lo = min(self.addrs)
        self.hi = max(self.addrs) + 1
        self.orig = self.read()

    def read(self):
        with open(f"/proc/{self.pid}/mem", "rb", buffering=0) as f:
            f.seek(self.lo)
            blob = f.read(self.hi - self.lo)
        return [blob[a - self.lo] for a in self.addrs]

    def patched(self):
        return sum(1 for a, b in zip(self.read(), self.orig) if a != b)

    def wait_patched(self, want, timeout, proc=None):
        """Poll until `want` entries differ from the original; returns the monotonic time then."""
        deadline = time.monotonic() + timeout
        while True:
            if self.patched() >= want:
                return time.monotonic()
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("tool exited before its hooks were live")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.patched()}/{want} entries patched after {timeout} s")
            time.sleep(0.005)

    def wait_restored(self, timeout):
        deadline = time.monotonic() + timeout
        while self.patched() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.patched() == 0


def _calls_for(tool, ns_warm):
    lo, hi = CALLS[tool]
    n = int(RUN_SECONDS * 1e9 / max(ns_warm, 1.0))
    n = max(lo, min(hi, n))
    return int(round(n, -3)) if n >= 10_000 else n


def _alive(target):
    try:
        answer = target.send("run 1000 1")
        return len(answer.split()) == 3 and answer.split()[1] == "1000"
    except Exception:
        return False


def _warm(target, entries, proc=None, timeout=60):
    """Wait until bench_fn's entry is patched, then a warm-up run; returns its ns/call."""
    entries.wait_patched(1, timeout, proc)
    return target.ns_per_call(1, calls=1000, repeats=1)


def _row(tool, threads, ns=None, seen=None, note=""):
    return {"tool": tool, "threads": threads, "ns_per_call": ns, "calls_seen": seen, "note": note}


def _seen_note(seen, expected):
    if seen is None:
        return "tool reported no count"
    if seen != expected:
        return f"tool saw {seen} of {expected} calls"
    return ""


# --- availability -----------------------------------------------------------------------------

def _check_bpftrace():
    if not _which("bpftrace"):
        return "bpftrace not installed (scripts/install-peers.sh)"
    if not os.path.exists("/sys/kernel/tracing/uprobe_events"):
        if os.geteuid() == 0:
            subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], capture_output=True)
        if not os.path.exists("/sys/kernel/tracing/uprobe_events"):
            return "tracefs not mounted (/sys/kernel/tracing/uprobe_events missing)"
    if not os.path.isdir("/sys/bus/event_source/devices/uprobe"):
        return "kernel has no uprobe PMU (CONFIG_UPROBE_EVENTS)"
    try:
        r = subprocess.run(["bpftrace", "-e", "BEGIN { exit(); }"], capture_output=True, text=True, timeout=60)
    except Exception as e:
        return f"bpftrace did not run: {_short(e)}"
    if r.returncode != 0:
        return f"bpftrace -e 'BEGIN {{ exit(); }}' failed: {_stderr_reason(r.stderr)}"
    return None


def _check_ltrace():
    if not _which("ltrace"):
        return "ltrace not installed (scripts/install-peers.sh)"
    try:
        r = subprocess.run(["ltrace", "-o", "/dev/null", "/bin/true"], capture_output=True, text=True, timeout=30)
    except Exception as e:
        return f"ltrace did not run: {_short(e)}"
    if r.returncode != 0:
        return f"ltrace /bin/true failed: {_stderr_reason(r.stderr)}"
    return None


def _check_frida():
    try:
        import frida
    except Exception as e:
        return f"python module frida not importable ({_short(e)}; scripts/install-peers.sh)"
    session = None
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        session = frida.attach(sleeper.pid)
        script = session.create_script("send(Process.arch);")
        got = []
        script.on("message", lambda m, d: got.append(m))
        script.load()
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        if not got or got[0].get("payload") != "x64":
            return f"frida script did not report: {got!r}"
        script.unload()
        return None
    except Exception as e:
        return f"frida.attach failed here: {_short(e)}"
    finally:
        if session is not None:
            try:
                session.detach()
            except Exception:
                pass
        sleeper.kill()
        sleeper.wait()


def _which(cmd):
    return any(os.access(os.path.join(d, cmd), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep) if d)


def tools():
    """{"bpftrace": None or why unavailable, "frida": ..., "ltrace": ...}; None means usable."""
    global _tools_cache
    if _tools_cache is None:
        _tools_cache = {}
        for name, check in (("bpftrace", _check_bpftrace), ("frida", _check_frida), ("ltrace", _check_ltrace)):
            try:
                _tools_cache[name] = check()
            except Exception as e:
                _tools_cache[name] = f"check failed: {_short(e)}"
    return dict(_tools_cache)


# --- bpftrace ---------------------------------------------------------------------------------

class _Bpftrace:
    """bpftrace -p PID SCRIPT in the background, from spawn to the BEGIN probe's "live" line
    (BEGIN fires after every other probe has been attached)."""

    def __init__(self, pid, program, nprobes=1, timeout=600):
        self.file = tempfile.NamedTemporaryFile("w", suffix=".bt", prefix="hookit-bench-", delete=False)
        self.file.write(program + '\nBEGIN { printf("live\\n"); }\n')
        self.file.close()
        env = dict(os.environ, BPFTRACE_MAX_PROBES=str(nprobes + 16), BPFTRACE_MAX_BPF_PROGS=str(nprobes + 16))
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(["bpftrace", "-p", str(pid), self.file.name], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.attaching_s = None
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = self.t0 + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise RuntimeError(f"bpftrace did not attach within {timeout} s")
            if line is None:
                _, err = _kill(self.proc, signal.SIGKILL, 30)
                self.close()
                raise RuntimeError("bpftrace failed: " + _stderr_reason(err))
            if line.startswith("Attaching"):
                self.attaching_s = time.monotonic() - self.t0
            if line.strip() == "live":
                break
        self.live_s = time.monotonic() - self.t0

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
            if line.strip() == "live":
                return  # the rest (the maps at exit) is read by stop()
        self.lines.put(None)

    def stop(self, timeout=120):
        """SIGINT (detaches every probe, prints the maps); returns (stdout rest, seconds).
        A SIGINT that bpftrace 0.17 drops (seen once, with 2000 probes) is sent again while
        it is still polling with all of its perf events open."""
        t = time.monotonic()
        deadline = t + timeout
        out = ""
        try:
            fds0 = self._fds()
            self.proc.send_signal(signal.SIGINT)
            while True:
                try:
                    out, _ = self.proc.communicate(timeout=2)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        raise
                    if self._fds() >= fds0 and self._state() == "S":
                        self.proc.send_signal(signal.SIGINT)
        except Exception:
            pass
        self.close()
        return out or "", time.monotonic() - t

    def _fds(self):
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return 0

    def _state(self):
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return "?"

    def close(self):
        _kill(self.proc, signal.SIGKILL, 30)
        try:
            os.unlink(self.file.name)
        except OSError:
            pass


def _bpftrace_per_call(target, threads_list):
    tool = "bpftrace uprobe count()"
    rows = []
    entries = _Entries(target, ["bench_fn"])
    for T in threads_list:
        bt = None
        try:
            bt = _Bpftrace(target.pid, f"uprobe:{target.path}:bench_fn {{ @c = count(); }}")
            ns_warm = _warm(target, entries, bt.proc)
            calls = _calls_for("bpftrace", ns_warm)
            ns = target.ns_per_call(T, calls=calls, repeats=REPEATS)
            out, _ = bt.stop()
            m = re.search(r"^@c:\s*(\d+)", out, re.M)
            seen = int(m.group(1)) - 1000 if m else None
            note = _seen_note(seen, calls * T * REPEATS)
            rows.append(_row(tool, T, ns, seen, ("; ".join(x for x in (f"{calls} calls x {REPEATS}", note) if x))))
        except Exception as e:
            rows.append(_row(tool, T, note=_short(f"failed: {e}")))
        finally:
            if bt is not None:
                bt.close()
            entries.wait_restored(30)
    return rows


def _bpftrace_attach(target, n):
    names = [f"many_{i}" for i in range(n)]
    entries = _Entries(target, names)
    probes = ",\n".join(f"uprobe:{target.path}:{name}" for name in names)
    bt = None
    try:
        bt = _Bpftrace(target.pid, probes + " { @[probe] = count(); }", nprobes=n)
        t_live = entries.wait_patched(n, 600, bt.proc)
        attach_s = t_live - bt.t0
        _, detach_s = bt.stop(BPFTRACE_DETACH_TIMEOUT)
        restored = entries.wait_restored(60)
        note = (f"explicit list of {n} uprobes, @[probe] = count(); from spawn to all {n} entries int3 "
                f"(codegen of {n} BPF programs until 'Attaching' {bt.attaching_s:.1f} s); "
                f"detach {detach_s:.1f} s (one perf event close + RCU-tasks-trace grace period each)")
        if not restored:
            note += "; NOT all entries restored after detach"
        return {"tool": "bpftrace", "functions": n, "attach_s": attach_s, "note": note}
    except Exception as e:
        return {"tool": "bpftrace", "functions": n, "attach_s": None, "note": _short(f"failed: {e}")}
    finally:
        if bt is not None:
            bt.close()


# --- Frida --------------------------------------------------------------------------------------

# Module.findExportByName misses exports of benchtarget with Frida 17.25 (enumerateExports does
# list them), so functions are resolved through the symbol table or one enumeration.
_FRIDA_JS = r"""
let n = 0;
const f = Process.mainModule.findExportByName('bench_fn') ?? Process.mainModule.findSymbolByName('bench_fn');
Interceptor.attach(f, { onEnter(args) { n++; } });
rpc.exports = { calls() { return n; } };
"""

_FRIDA_CMODULE = r"""
const counter = Memory.alloc(8);
const cm = new CModule(`
#include <gum/guminterceptor.h>
extern volatile gint counter;
void onEnter(GumInvocationContext *ic) { g_atomic_int_add(&counter, 1); }
`, { counter });
const f = Process.mainModule.findExportByName('bench_fn') ?? Process.mainModule.findSymbolByName('bench_fn');
Interceptor.attach(f, cm);
rpc.exports = { calls() { return counter.readU32(); } };
"""

_FRIDA_MANY = r"""
const names = NAMES;
const t0 = Date.now();
const all = new Map();
for (const e of Process.mainModule.enumerateExports()) all.set(e.name, e.address);
const t1 = Date.now();
let n = 0;
const cb = { onEnter(args) { n++; } };
for (const name of names) Interceptor.attach(all.get(name), cb);
const t2 = Date.now();
send({ resolve_ms: t1 - t0, attach_ms: t2 - t1 });
"""


class _FridaScript:
    def __init__(self, pid, source):
        import frida
        self.session = None
        self.script = None
        self.messages = []
        self.errors = []
        self.session = frida.attach(pid)
        self.script = self.session.create_script(source)
        self.script.on("message", self._on_message)
        self.script.load()
        if self.errors:
            raise RuntimeError(self.errors[0])

    def _on_message(self, message, data):
        if message.get("type") == "error":
            self.errors.append(_short(message.get("description", message)))
        else:
            self.messages.append(message.get("payload"))

    def calls(self):
        return int(self.script.exports_sync.calls())

    def close(self):
        try:
            if self.script is not None:
                self.script.unload()
        except Exception:
            pass
        try:
            if self.session is not None:
                self.session.detach()
        except Exception:
            pass


def _frida_per_call(target, threads_list, kind):
    tool, source = {"frida-js": ("frida JS onEnter", _FRIDA_JS),
                    "frida-cmodule": ("frida CModule onEnter", _FRIDA_CMODULE)}[kind]
    rows = []
    fs = None
    entries = _Entries(target, ["bench_fn"])
    try:
        fs = _FridaScript(target.pid, source)
        ns_warm = _warm(target, entries)
        if fs.calls() < 1000:
            raise RuntimeError(f"hook not live: saw {fs.calls()} of 1000 warm-up calls")
        calls = _calls_for(kind, ns_warm)
        for T in threads_list:
            try:
                before = fs.calls()
                ns = target.ns_per_call(T, calls=calls, repeats=REPEATS)
                seen = fs.calls() - before
                note = _seen_note(seen, calls * T * REPEATS)
                rows.append(_row(tool, T, ns, seen, "; ".join(x for x in (f"{calls} calls x {REPEATS}", note) if x)))
            except Exception as e:
                rows.append(_row(tool, T, note=_short(f"failed: {e}")))
    except Exception as e:
        rows = [_row(tool, T, note=_short(f"failed: {e}")) for T in threads_list]
    finally:
        if fs is not None:
            fs.close()
        entries.wait_restored(30)
    return rows


def _frida_attach(target, n):
    names = [f"many_{i}" for i in range(n)]
    entries = _Entries(target, names)
    fs = None
    try:
        t0 = time.monotonic()
        fs = _FridaScript(target.pid, _FRIDA_MANY.replace("NAMES", repr(names)))
        t_loaded = time.monotonic()
        deadline = time.monotonic() + 30
        while not fs.messages and time.monotonic() < deadline:
            time.sleep(0.005)
        t_live = entries.wait_patched(n, 60)
        inner = fs.messages[0] if fs.messages else {}
        t = time.monotonic()
        fs.close()
        fs = None
        detach_s = time.monotonic() - t
        restored = entries.wait_restored(60)
        note = (f"frida.attach + script with {n} Interceptor.attach (JS onEnter), until all {n} entries "
                f"patched; inside the script: resolve {inner.get('resolve_ms', '?')} ms (enumerateExports), "
                f"attach {inner.get('attach_ms', '?')} ms; detach {detach_s:.2f} s")
        if not restored:
            note += "; NOT all entries restored after detach"
        return {"tool": "frida", "functions": n, "attach_s": max(t_loaded, t_live) - t0, "note": note}
    except Exception as e:
        return {"tool": "frida", "functions": n, "attach_s": None, "note": _short(f"failed: {e}")}
    finally:
        if fs is not None:
            fs.close()


# --- ltrace ---------------------------------------------------------------------------------------

def _ltrace_per_call(target, threads_list):
    tool = "ltrace -x bench_fn"
    rows = []
    entries = _Entries(target, ["bench_fn"])
    for T in threads_list:
        proc = None
        out_path = None
        try:
            fd, out_path = tempfile.mkstemp(prefix="hookit-bench-ltrace-", suffix=".out")
            os.close(fd)
            # -f: the calls happen in threads `run` creates; -e -*: no PLT (library call) tracing;
            # -x bench_fn: the local (non-PLT) symbol in the main binary.
            proc = subprocess.Popen(["ltrace", "-f", "-p", str(target.pid), "-e", "-*", "-x", "bench_fn",
                                     "-o", out_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            ns_warm = _warm(target, entries, proc, timeout=30)
            calls = _calls_for("ltrace", ns_warm)
            ns = target.ns_per_call(T, calls=calls, repeats=REPEATS)
            _, err = _kill(proc, signal.SIGINT, 60)
            with open(out_path, errors="replace") as f:
                seen = sum(line.count("bench_fn(") for line in f) - 1000
            note = _seen_note(seen, calls * T * REPEATS)
            rows.append(_row(tool, T, ns, seen, "; ".join(
                x for x in (f"{calls} calls x {REPEATS}, each call logged to a file", note) if x)))
        except Exception as e:
            rows.append(_row(tool, T, note=_short(f"ltrace could not trace bench_fn: {e}")))
        finally:
            _kill(proc, signal.SIGINT, 30)
            if out_path:
                try:
                    os.unlink(out_path)
                except OSError:
                    pass
            entries.wait_restored(30)
    return rows


# --- public interface -------------------------------------------------------------------------

def per_call_rows(target, threads_list=(1, 2)):
    """Per-call cost of bench_fn under each usable peer tool, for each thread count."""
    avail = tools()
    rows = []
    configs = [("bpftrace", "bpftrace uprobe count()", lambda: _bpftrace_per_call(target, threads_list)),
               ("frida", "frida JS onEnter", lambda: _frida_per_call(target, threads_list, "frida-js")),
               ("frida", "frida CModule onEnter", lambda: _frida_per_call(target, threads_list, "frida-cmodule")),
               ("ltrace", "ltrace -x bench_fn", lambda: _ltrace_per_call(target, threads_list))]
    for key, tool, run in configs:
        if avail.get(key) is not None:
            rows += [_row(tool, T, note=f"unavailable: {avail[key]}") for T in threads_list]
            continue
        try:
            rows += run()
        except Exception as e:  # a bug here must not take the bench down
            rows += [_row(tool, T, note=_short(f"failed: {e}")) for T in threads_list]
        if not _alive(target):
            rows.append(_row(tool, None, note="target stopped answering after this tool"))
            break
    return rows


def attach_rows(target, counts=(2000,)):
    """Time for each usable tool to hook many_0..many_{n-1} of the target, until the hooks are live."""
    avail = tools()
    rows = []
    for n in counts:
        for key, run in (("bpftrace", _bpftrace_attach), ("frida", _frida_attach)):
            if avail.get(key) is not None:
                rows.append({"tool": key, "functions": n, "attach_s": None, "note": f"unavailable: {avail[key]}"})
                continue
            try:
                rows.append(run(target, n))
            except Exception as e:
                rows.append({"tool": key, "functions": n, "attach_s": None, "note": _short(f"failed: {e}")})
        rows.append({"tool": "ltrace", "functions": n, "attach_s": None,
                     "note": "skipped: ltrace sets one breakpoint per traced symbol and logs every call; "
                             "not a bulk-hooking tool"})
    return rows
