"""hookit's own memory in a long --trace session that writes a Chrome trace (--output): the
trace is written as a stream, so hookit's peak RSS must not grow with the calls traced.

Each row: a fresh benchtarget, `hookit attach --trace benchtarget:bench_fn --output FILE`, a
reader that keeps up with hookit's stdout, runs of 4096 calls (what the trace ring holds) until
N calls were traced and printed, then hookit's VmHWM (peak resident set) read from /proc before
it detaches. The slope between the rows is the memory per million traced calls.

    python3 bench/bench.py --only-memory
"""
import os
import tempfile

from benchlib import HookitSession, Target

RUN = 4096


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def row(hookit, calls):
    target = Target()
    out = tempfile.NamedTemporaryFile(prefix="hookit-mem-", suffix=".json", delete=False)
    out.close()
    try:
        target.send("use 0")
        session = HookitSession(hookit, target.pid, ["--trace", "benchtarget:bench_fn", "--output", out.name],
                                read_trace=True)
        done = 0
        while done < calls:
            target.send(f"run {RUN} 1")
            session.all_printed(RUN, lambda: target.send("run 1 1"))
            done += RUN
        rss = peak_rss_kib(session.proc.pid)
        session.detach()
        return {"calls": session.traced, "rss_kib": rss, "file_mib": os.path.getsize(out.name) / (1 << 20)}
    finally:
        target.close()
        os.unlink(out.name)


def rows(hookit, quick=False):
    return [row(hookit, n) for n in ((50_000, 200_000) if quick else (200_000, 1_000_000))]


def render(rs):
    out = ["Memory of a --trace --output session (hookit's peak RSS; the Chrome trace is written as a stream)",
           f"{'traced calls':>13} {'hookit peak RSS MiB':>20} {'trace file MiB':>15}"]
    for r in rs:
        out.append(f"{r['calls']:>13} {r['rss_kib'] / 1024:>20.1f} {r['file_mib']:>15.1f}")
    if len(rs) >= 2 and rs[-1]["calls"] > rs[0]["calls"]:
        slope = (rs[-1]["rss_kib"] - rs[0]["rss_kib"]) / 1024 / ((rs[-1]["calls"] - rs[0]["calls"]) / 1e6)
        out.append(f"per million traced calls: {slope:+.1f} MiB of hookit's memory")
    return "\n".join(out)
