#!/usr/bin/env python3
"""hookit's benchmark: one table, everything measured in the same run on the same target.

    make bench          hookit's own rows
    make bench-peers    installs bpftrace, Frida and ltrace, and adds their rows

Per-call overhead is measured by the target itself (testtargets/bench.c: T threads call
bench_fn in a tight loop; the slowest thread's time per call), with and without hooks, side
by side in this run, and reported as ns above the unhooked call and as a ratio to it.

The "pause seen by the process" table (bench/pause.py) is the longest time a probe thread of the
target was kept from running while a tool attached, stayed 0.3 s and detached.
`python3 bench/bench.py --only-pause [--peers] [--quick]` runs that table alone.
"""
import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BUILD, ROOT, HookitSession, Target  # noqa: E402
import pause  # noqa: E402
import plot  # noqa: E402

PROGS = os.path.join(BUILD, "libbenchprogs.so")
CALLS = 5_000_000


def per_call(hookit, threads_list):
    """Rows: (config, threads, ns per call, ns above baseline, ratio)."""
    # (row name, function, loop, hookit arguments). The pointer loop calls through a volatile
    # pointer (the caller assumes nothing); the direct loop calls bench_fn_direct from its own
    # file, compiled at -O2, so -fipa-ra lets it keep values in caller-saved registers.
    via = f"{PROGS}:bench_fn_via_original"
    direct_via = f"{PROGS}:bench_fn_direct_via_original"
    clob = f"{PROGS}:bench_fn_clobbering"
    configs = [
        ("unhooked", "bench_fn", "pointer", []),
        ("fentry count", "bench_fn", "pointer", ["--prog", "fentry:benchtarget:bench_fn=count"]),
        ("fentry count (patchable entry)", "bench_fn_patchable", "pointer", ["--prog", "fentry:benchtarget:bench_fn_patchable=count"]),
        ("fexit count", "bench_fn", "pointer", ["--prog", "fexit:benchtarget:bench_fn=count"]),
        ("fmod_ret C program, original runs", "bench_fn", "pointer", ["--prog", f"fmod_ret:benchtarget:bench_fn={PROGS}:bench_noop"]),
        ("fentry C program", "bench_fn", "pointer", ["--prog", f"fentry:benchtarget:bench_fn={PROGS}:bench_noop"]),
        ("fentry C program, no timing", "bench_fn", "pointer", ["--no-time", "--prog", f"fentry:benchtarget:bench_fn={PROGS}:bench_noop"]),
        ("--count (calls, time, histogram)", "bench_fn", "pointer", ["--count", "benchtarget:bench_fn"]),
        ("--trace (ring buffer)", "bench_fn", "pointer", ["--trace", "benchtarget:bench_fn"]),
        ("--override (function skipped)", "bench_fn", "pointer", ["--override", "benchtarget:bench_fn=0"]),
        ("replace (proven: bare jmp)", "bench_fn", "pointer", ["--prog", f"replace:benchtarget:bench_fn={PROGS}:bench_fn_replacement"]),
        ("replace via HOOKIT_ORIGINAL (proven: jmp)", "bench_fn", "pointer", ["--replace", f"benchtarget:bench_fn={via}"]),
        ("replace, clobbering (wrapped)", "bench_fn", "pointer", ["--replace", f"benchtarget:bench_fn={clob}"]),
        ("--replace-raw, clobbering", "bench_fn", "pointer", ["--replace-raw", f"benchtarget:bench_fn={clob}"]),
        ("unhooked, direct call", "bench_fn_direct", "direct", []),
        ("--override, direct call", "bench_fn_direct", "direct", ["--override", "benchtarget:bench_fn_direct=0"]),
        ("replace (proven: bare jmp), direct call", "bench_fn_direct", "direct", ["--replace", f"benchtarget:bench_fn_direct={PROGS}:bench_fn_replacement"]),
        ("replace via HOOKIT_ORIGINAL, direct", "bench_fn_direct", "direct", ["--replace", f"benchtarget:bench_fn_direct={direct_via}"]),
        ("replace, clobbering (wrapped), direct", "bench_fn_direct", "direct", ["--replace", f"benchtarget:bench_fn_direct={clob}"]),
    ]
    rows = []
    target = Target()
    try:
        baseline = {}
        for name, fn, loop, args in configs:
            target.send("use 2" if loop == "direct" else "use 1" if fn == "bench_fn_patchable" else "use 0")
            session = HookitSession(hookit, target.pid, args) if args else None
            try:
                for t in threads_list:
                    ns = target.ns_per_call(t, calls=CALLS)
                    if not args:
                        baseline[(loop, t)] = ns
                    rows.append({"tool": "hookit", "config": name, "threads": t, "ns": ns, "loop": loop})
            finally:
                if session:
                    session.detach()
        # The baseline again at the end: the machine is noisy; report the drift.
        target.send("use 0")
        for t in threads_list:
            again = target.ns_per_call(t, calls=CALLS)
            rows.append({"tool": "hookit", "config": "unhooked (again, at the end)", "threads": t, "ns": again, "loop": "pointer"})
    finally:
        target.close()
    for r in rows:
        b = baseline[(r["loop"], r["threads"])]
        r["over"] = r["ns"] - b if r["ns"] is not None else None
        r["ratio"] = r["ns"] / b if r["ns"] is not None else None
    return rows, {t: baseline[("pointer", t)] for t in threads_list}


def attach_times(hookit, counts, thread_counts):
    """Attach/detach wall time and the longest stop, for N functions and T tracee threads."""
    patterns = {
        1: ["many_0"],
        100: ["many_?", "many_??"],
        2000: ["many_?", "many_??", "many_???", "many_1???"],
        10000: ["many_*"],
    }
    rows = []
    for threads in thread_counts:
        for n in counts:
            target = Target()
            try:
                if threads > 1:
                    target.send(f"idle {threads - 1}")
                rss0 = target.rss_kib()
                args = []
                for p in patterns[n]:
                    args += ["--prog", f"fentry:benchtarget:{p}=count"]
                s = HookitSession(hookit, target.pid, args)
                rss1 = target.rss_kib()
                assert s.attached["functions"] == n, s.attached
                s.detach()
                rows.append({
                    "functions": n, "threads": threads,
                    "attach_s": s.attach_s, "attach_stop_ms": s.attached["stopped_ns"] / 1e6,
                    "attach_longest_stop_ms": s.attached["longest_stop_ns"] / 1e6,
                    "detach_s": s.detach_s, "detach_longest_stop_ms": s.detached["longest_stop_ns"] / 1e6,
                    "code_bytes_per_fn": s.attached["code_bytes_used"] / n,
                    "code_mapped_kib": s.attached["code_bytes_mapped"] / 1024,
                    "rss_added_kib": rss1 - rss0,
                })
            finally:
                target.close()
    return rows


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}"


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def render(per_call_rows, attach_rows, peer_rows, peer_attach_rows, peer_status, pause_rows=None):
    out = []
    if per_call_rows is None:  # --only-pause
        return pause.render(pause_rows, machine())
    out.append("Per-call overhead (measured by the target; median of 5 runs; \"direct\" rows against the unhooked direct-call loop)")
    out.append(f"{'tool':<10} {'configuration':<42} {'threads':>7} {'ns/call':>9} {'+ns':>9} {'x base':>8}")
    for r in per_call_rows + peer_rows:
        out.append(f"{r['tool']:<10} {r['config']:<42} {r['threads']:>7} {fmt(r['ns'], 2):>9} {fmt(r.get('over'), 2):>9} {fmt(r.get('ratio'), 1):>8}"
                   + (f"  {r['note']}" if r.get("note") else ""))
    out.append("")
    out.append("Attach and detach (--count on N functions, T tracee threads)")
    out.append(f"{'N':>6} {'T':>4} {'attach s':>9} {'stopped ms':>10} {'longest ms':>10} {'detach s':>9} {'session longest ms':>18} {'B/fn':>6} {'mapped KiB':>10} {'RSS+ KiB':>9}")
    for r in attach_rows:
        out.append(f"{r['functions']:>6} {r['threads']:>4} {r['attach_s']:>9.3f} {r['attach_stop_ms']:>10.2f} {r['attach_longest_stop_ms']:>10.2f} "
                   f"{r['detach_s']:>9.3f} {r['detach_longest_stop_ms']:>18.2f} {r['code_bytes_per_fn']:>6.0f} {r['code_mapped_kib']:>10.0f} {r['rss_added_kib']:>9}")
    for r in peer_attach_rows:
        out.append(f"{r['functions']:>6} {'':>4} {fmt(r.get('attach_s'), 3):>9}  {r['tool']}" + (f"  {r['note']}" if r.get("note") else ""))
    if peer_status:
        out.append("")
        out.append("Peer tools: " + ", ".join(f"{k}: {'used' if v is None else 'unavailable (' + v + ')'}" for k, v in peer_status.items()))
    if pause_rows is not None:
        out.append("")
        out.append(pause.render(pause_rows, machine()))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hookit", default=os.path.join(ROOT, ".build", "release", "hookit"))
    ap.add_argument("--peers", action="store_true", help="add bpftrace, Frida and ltrace rows")
    ap.add_argument("--quick", action="store_true", help="fewer rows (smoke test)")
    ap.add_argument("--only-pause", action="store_true",
                    help="only the \"pause seen by the process\" table (with --peers: Frida's rows too); printed, not written to RESULTS.md")
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    a = ap.parse_args()

    if a.only_pause:
        frida = False
        if a.peers:
            import peers
            frida = peers.tools()["frida"]
        print(render(None, None, None, None, None, pause.rows(a.hookit, frida=frida, quick=a.quick)))
        return

    threads = [1, 2]
    counts = [1, 100] if a.quick else [1, 100, 2000, 10000]
    started = time.time()
    per_call_rows, baseline = per_call(a.hookit, threads)
    attach_rows = attach_times(a.hookit, counts, [1] if a.quick else [1, 200])
    peer_rows, peer_attach_rows, peer_status = [], [], {}
    if a.peers:
        import peers
        peer_status = peers.tools()
        target = Target()
        try:
            for r in peers.per_call_rows(target, tuple(threads)):
                b = baseline[r["threads"]]
                ns = r.get("ns_per_call")
                peer_rows.append({"tool": r["tool"].split()[0], "config": " ".join(r["tool"].split()[1:]) or r["tool"],
                                  "threads": r["threads"], "ns": ns, "over": None if ns is None else ns - b,
                                  "ratio": None if ns is None else ns / b, "note": r.get("note", "")})
            peer_attach_rows = peers.attach_rows(target, (2000,))
        finally:
            target.close()
    try:
        pause_rows = pause.rows(a.hookit, frida=peer_status.get("frida") if a.peers else False, quick=a.quick)
    except Exception as e:
        pause_rows = pause.failed(e)

    table = render(per_call_rows, attach_rows, peer_rows, peer_attach_rows, peer_status, pause_rows)
    print(table)
    svg = os.path.join(ROOT, "bench", "overhead.svg")
    plot.overhead_svg(per_call_rows + peer_rows, svg)
    command = "make bench-peers" if a.peers else "make bench"
    with open(a.results, "w") as f:
        f.write("# hookit benchmark results\n\n")
        f.write(f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n")
        f.write(f"- machine: {machine()}\n")
        f.write(f"- command: `{command}` ({time.time() - started:.0f} s)\n")
        f.write("- per-call figures are measured by the target in the same run as its unhooked baseline; "
                "the machine is shared and noisy, so compare ratios within one run, not absolute times across runs\n\n")
        f.write("```\n" + table + "\n```\n\n")
        f.write("![per-call overhead by tool, log scale](overhead.svg)\n")
    print(f"\nwrote {a.results} and {svg}")


if __name__ == "__main__":
    main()
