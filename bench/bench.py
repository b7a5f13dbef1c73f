#!/usr/bin/env python3
"""hookit's benchmark: one table, everything measured in the same run on the same target.

    make bench          hookit's own rows
    make bench-peers    installs bpftrace, Frida and ltrace, and adds their rows

Per-call overhead is measured by the target itself (testtargets/bench.c: T threads call
bench_fn in a tight loop; the slowest thread's time per call), with and without hooks, side
by side in this run, and reported as ns above the unhooked call and as a ratio to it.

Three limit rows measure, in the same target and run, what a trampoline costs at least on this
CPU: "limit: entry trampoline" (a hand-written stub that bumps a thread-local counter and jumps
to bench_fn), "limit: exit wrapper" (one that calls bench_fn and bumps it after the return), and
"limit: exit wrapper, two TSC reads" (the same, timing the call: the floor of --count and
--trace, which take a timestamp at entry and at exit).
Every hookit row gets its ratio to the matching one (x limit) and, where issue 14 sets one, its
goal in ns above the unhooked call and whether this run met it. The CPU (vendor, model, the
flags that decide the cost of a vector-state save) heads the table, so figures from different
machines can be read side by side. --trace rows named for their arguments are measured with
every call printed (short runs that the trace ring holds), not on the ring-full drop path.

The "pause seen by the process" table (bench/pause.py) is the longest time a probe thread of the
target was kept from running while a tool attached, stayed 0.3 s and detached.
`python3 bench/bench.py --only-pause [--peers] [--quick]` runs that table alone.
The memory table (bench/memory.py: hookit's peak RSS in a long --trace --output session, and
its growth per million traced calls) runs alone with `--only-memory`.
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
import memory  # noqa: E402
import pause  # noqa: E402
import plot  # noqa: E402

PROGS = os.path.join(BUILD, "libbenchprogs.so")
GPR_PROGS = os.path.join(BUILD, "libbenchprogs_gpr.so")
# `use` numbers of testtargets/bench.c.
USE = {"bench_fn": 0, "bench_fn_patchable": 1, "bench_fn_direct": 2, "limit_entry": 3, "limit_exit": 4,
       "bench_fn6": 5, "bench_fn_str": 6, "limit_timed": 7}
# The loop each `use` runs, whose unhooked row is the baseline of the rows on it.
LOOP = {"bench_fn": "pointer", "bench_fn_patchable": "pointer", "limit_entry": "pointer", "limit_exit": "pointer",
        "limit_timed": "pointer",
        "bench_fn_direct": "direct", "bench_fn6": "six args", "bench_fn_str": "str arg"}
SIG6 = "bench_fn6(long, long, long, long, long, long) -> long"
SIGSTR = "bench_fn_str(str) -> long"


def config(name, fn, args=(), limit=None, goal=None, frida=False, every_event=False, calls=None):
    """One per-call row (for each thread count).
    limit: the limit row it is held against: "entry" (the function is entered, nothing runs
    after it) or "exit" (the original is called and something runs after it returns); on a
    limit row itself, the limit it measures. goal: the issue's, in ns above the unhooked call:
    a number, ("limit", n) for the entry limit's +ns plus n, ("scale", n, g1) for g1 at 1
    thread and n times the 1-thread figure at 2. frida: compared with Frida's CModule onEnter
    (bench-peers). every_event: --trace measured with every call printed (see measure); calls:
    its calls per thread and run, when fewer than TRACE_CALLS_PER_THREAD. A goal ("above", ROW, n)
    is n ns above ROW's figure at as many threads (the --stack copy alone: above --trace)."""
    return {"name": name, "fn": fn, "args": list(args), "limit": limit, "goal": goal, "frida": frida,
            "every_event": every_event, "calls": calls}


def configs():
    # The pointer loop calls through a volatile pointer (the caller assumes nothing); the direct
    # loop calls bench_fn_direct from its own file, compiled at -O2, so -fipa-ra lets it keep
    # values in caller-saved registers across the call.
    via = f"{PROGS}:bench_fn_via_original"
    direct_via = f"{PROGS}:bench_fn_direct_via_original"
    clob = f"{PROGS}:bench_fn_clobbering"
    fentry = "fentry:benchtarget:bench_fn="
    fexit = "fexit:benchtarget:bench_fn="
    return [
        config("unhooked", "bench_fn"),
        config("limit: entry trampoline", "limit_entry", limit="entry"),
        config("limit: exit wrapper", "limit_exit", limit="exit"),
        config("limit: exit wrapper, two TSC reads", "limit_timed", limit="timed"),
        config("fentry count", "bench_fn", ["--prog", fentry + "count"], "entry", ("limit", 1), frida=True),
        config("fentry count (patchable entry)", "bench_fn_patchable", ["--prog", "fentry:benchtarget:bench_fn_patchable=count"], "entry", ("limit", 1)),
        config("fexit count", "bench_fn", ["--prog", fexit + "count"], "exit", 5),
        config("fmod_ret C program, original runs", "bench_fn", ["--prog", f"fmod_ret:benchtarget:bench_fn={PROGS}:bench_noop"], "exit"),
        config("fentry C program", "bench_fn", ["--prog", f"{fentry}{PROGS}:bench_noop"], "entry", frida=True),
        config("fentry C program, --prog-time", "bench_fn", ["--prog-time", "--prog", f"{fentry}{PROGS}:bench_noop"], "entry", frida=True),
        config("fentry C program (general registers)", "bench_fn", ["--prog", f"{fentry}{GPR_PROGS}:bench_gpr_read_arg"], "entry", 10, frida=True),
        config("fexit C program (general registers)", "bench_fn", ["--prog", f"{fexit}{GPR_PROGS}:bench_gpr_read_arg"], "exit", 15),
        config("fentry C program (uses SSE)", "bench_fn", ["--prog", f"{fentry}{PROGS}:bench_uses_sse"], "entry", "none", frida=True),
        config("--count (calls, time, histogram)", "bench_fn", ["--count", "benchtarget:bench_fn"], "timed", 12, frida=True),
        config("--trace (ring buffer)", "bench_fn", ["--trace", "benchtarget:bench_fn"], "timed"),
        # --if decided at entry: the filter runs, the trace's programs do not (nothing is traced).
        config("--trace --if, call filtered out", "bench_fn", ["--trace", "benchtarget:bench_fn", "--if", "arg0 < 0"], "exit", 20),
        config("--override (function skipped)", "bench_fn", ["--override", "benchtarget:bench_fn=0"], "exit", 8),
        config("replace (proven: bare jmp)", "bench_fn", ["--prog", f"replace:benchtarget:bench_fn={PROGS}:bench_fn_replacement"], "entry"),
        config("replace via HOOKIT_ORIGINAL (proven: jmp)", "bench_fn", ["--replace", f"benchtarget:bench_fn={via}"], "entry"),
        config("replace, clobbering (wrapped)", "bench_fn", ["--replace", f"benchtarget:bench_fn={clob}"], "exit"),
        config("--replace-raw, clobbering", "bench_fn", ["--replace-raw", f"benchtarget:bench_fn={clob}"], "entry"),
        config("unhooked, 6 integer arguments", "bench_fn6"),
        config("--trace, 6 integer arguments", "bench_fn6", ["--trace", "benchtarget:bench_fn6", "--sig", SIG6], "timed",
               ("scale", 1.3, 20), every_event=True),
        # Issue 18: the stack copy (4 KiB per call into the stack ring) costs at most 300 ns in the
        # process; unwinding is hookit's. Runs short enough for the stack ring (4096 records).
        config("--trace --stack, 6 integer arguments", "bench_fn6", ["--trace", "benchtarget:bench_fn6", "--sig", SIG6, "--stack"],
               "timed", ("above", "--trace, 6 integer arguments", 300), every_event=True, calls=STACK_CALLS_PER_THREAD),
        config("unhooked, one str argument", "bench_fn_str"),
        config("--trace, one str argument", "bench_fn_str", ["--trace", "benchtarget:bench_fn_str", "--sig", SIGSTR], "timed",
               60, every_event=True),
        config("--trace --if str(arg0) ==, filtered out", "bench_fn_str",
               ["--trace", "benchtarget:bench_fn_str", "--if", 'str(arg0) == "/etc/hookit/other.conf"'], "exit"),
        config("unhooked, direct call", "bench_fn_direct"),
        config("--override, direct call", "bench_fn_direct", ["--override", "benchtarget:bench_fn_direct=0"], "exit", 8),
        config("replace (proven: bare jmp), direct call", "bench_fn_direct", ["--replace", f"benchtarget:bench_fn_direct={PROGS}:bench_fn_replacement"], "entry"),
        config("replace via HOOKIT_ORIGINAL, direct", "bench_fn_direct", ["--replace", f"benchtarget:bench_fn_direct={direct_via}"], "entry"),
        config("replace, clobbering (wrapped), direct", "bench_fn_direct", ["--replace", f"benchtarget:bench_fn_direct={clob}"], "exit"),
    ]


# --trace rows with every_event: runs short enough that the trace ring (65536 slots) holds
# their events, and every event printed before the next run, so no call takes the cheaper drop
# path (as the plain "--trace (ring buffer)" row mostly does: nothing reads hookit's output
# there, so hookit stops reading the ring and it fills; kept as it was, to compare with older
# tables). A run's output (8192 lines of ~300 bytes) stays well under the 8 MiB of unread
# output after which hookit stops reading the ring. The session's own count of dropped events,
# in the note, must then be 0. Every thread count runs as many calls per thread, so each run
# lasts about as long (whether hookit's reader wakes during a run depends on it), and two laps
# of the ring go first (warm_trace): the tracee's first touch of each ring page is a page
# fault, which steady tracing never pays.
TRACE_CALLS_PER_THREAD = 4096
TRACE_WARMUP_CALLS = 2 * 65536
# --stack rows: two threads' runs fit one CPU's stack ring (2048 records on two CPUs).
STACK_CALLS_PER_THREAD = 1024


def measure(target, session, c, t, calls, repeats):
    """ns per call of one row at t threads, and a note."""
    if not c["every_event"]:
        return target.ns_per_call(t, calls=calls, repeats=repeats), ""
    nudges = 0

    def all_printed(total):
        nonlocal nudges
        nudges += session.all_printed(total, lambda: target.send("run 1 1"))
    n = c["calls"] or TRACE_CALLS_PER_THREAD
    ns = target.ns_per_call(t, calls=n, repeats=5 * repeats, after_run=all_printed)
    return ns, f"{n} calls x {5 * repeats}, each run printed before the next ({nudges} nudges)"


def warm_trace(target, session):
    n = TRACE_CALLS_PER_THREAD
    target.ns_per_call(2, calls=n, repeats=TRACE_WARMUP_CALLS // (2 * n),
                       after_run=lambda total: session.all_printed(total, lambda: target.send("run 1 1")))


def per_call(hookit, threads_list, quick=False):
    """Rows: config, threads, ns per call, ns above its loop's baseline, ratio, and against the
    limit rows. Every row is measured on the same target in this run."""
    calls, repeats = (500_000, 3) if quick else (5_000_000, 5)
    rows = []
    target = Target()
    try:
        for c in configs():
            target.send(f"use {USE[c['fn']]}")
            args = c["args"]
            session = HookitSession(hookit, target.pid, args, read_trace=c["every_event"]) if args else None
            measured = []
            try:
                if c["every_event"]:
                    warm_trace(target, session)
                for t in threads_list:
                    ns, note = measure(target, session, c, t, calls, repeats)
                    measured.append({"tool": "hookit", "config": c["name"], "threads": t, "ns": ns,
                                     "loop": LOOP[c["fn"]], "cfg": c, "note": note})
            finally:
                if session:
                    session.detach()
            if session and "traced" in session.detached:
                d = session.detached
                warn = " (the ring was full: part of the figure is the drop path)" if c["every_event"] and d["dropped"] else ""
                for r in measured:
                    r["note"] = "; ".join(x for x in (r["note"], f"session: {d['traced']} traced, {d['dropped']} dropped{warn}") if x)
            rows += measured
        # The rows without hooks (baselines and limits) again at the end: the machine is shared
        # and a burst of other work during one measurement would shift every row held against
        # it. Noise only adds time, so each keeps the lower of its two figures; the unhooked
        # row's second one is shown for the drift.
        for r in [r for r in rows if not r["cfg"]["args"]]:
            target.send(f"use {USE[r['cfg']['fn']]}")
            again = target.ns_per_call(r["threads"], calls=calls, repeats=repeats)
            if r["config"] == "unhooked":
                rows.append({"tool": "hookit", "config": "unhooked (again, at the end)", "threads": r["threads"], "ns": again,
                             "loop": "pointer", "cfg": config("again", "bench_fn"), "note": ""})
            if again < r["ns"]:
                r["note"] = f"the lower of {r['ns']:.2f} (first) and {again:.2f} (at the end)"
                r["ns"] = again
    finally:
        target.close()
    baseline = {(r["loop"], r["threads"]): r["ns"] for r in rows
                if not r["cfg"]["args"] and not r["cfg"]["limit"] and r["cfg"]["name"] != "again"}
    for r in rows:
        b = baseline[(r["loop"], r["threads"])]
        r["over"] = r["ns"] - b
        r["ratio"] = r["ns"] / b
    limits = {(r["cfg"]["limit"], r["threads"]): r for r in rows if r["cfg"]["limit"] and not r["cfg"]["args"]}
    for r in rows:
        against_limit(r, limits, baseline)
    goals(rows, limits)
    return rows, {t: baseline[("pointer", t)] for t in threads_list}


def against_limit(r, limits, baseline):
    """x limit: the row's ns/call over the limit's on the same loop (the row's own baseline plus
    the limit's +ns; on the pointer loop that is the limit row's ns/call); +limit: ns above it."""
    c = r["cfg"]
    if not c["args"] or not c["limit"] or (c["limit"], r["threads"]) not in limits:
        return
    lim = limits[(c["limit"], r["threads"])]["over"]
    r["x_limit"] = r["ns"] / (baseline[(r["loop"], r["threads"])] + lim)
    r["over_limit"] = r["over"] - lim


def goals(rows, limits):
    """The issue's goal for each row that has one, and whether this run met it."""
    one = {(r["config"], r["threads"]): r for r in rows}
    for r in rows:
        g = r["cfg"]["goal"]
        if g is None:
            continue
        if g == "none":
            r["goal"], r["met"] = "none", "-"
            continue
        if isinstance(g, tuple) and g[0] == "limit":
            bound, text = limits[("entry", r["threads"])]["over"] + g[1], f"limit+{g[1]:g}"
        elif isinstance(g, tuple) and g[0] == "above":
            other = one.get((g[1], r["threads"]))
            if other is None:
                continue
            bound, text = other["over"] + g[2], f"{g[1].split(',')[0]}+{g[2]:g}"
        elif isinstance(g, tuple) and g[0] == "scale":
            first = one.get((r["config"], 1))
            if r["threads"] == 1 or first is None:
                bound, text = g[2], ""
            else:
                bound, text = g[1] * first["over"], f"{g[1]:g}x 1 thr"
        else:
            bound, text = g, ""
        r["goal"] = f"<={bound:.1f}" + (f" ({text})" if text else "")
        r["met"] = "yes" if r["over"] <= bound else "NO"


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


def cpu():
    """The CPU as /proc/cpuinfo names it, and the flags that decide what a vector-state save costs."""
    info = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if not line.strip():
                break  # the first processor is enough
            k, _, v = line.partition(":")
            info[k.strip()] = v.strip()
    flags = set(info.get("flags", "").split())
    marks = ", ".join(f"{x} {'yes' if x in flags else 'no'}" for x in ("avx2", "avx512f", "xsavec", "xsaveopt"))
    return (f"{info.get('vendor_id', '?')} {info.get('model name', '?')} (family {info.get('cpu family', '?')} "
            f"model {info.get('model', '?')} stepping {info.get('stepping', '?')}; {marks})")


def machine():
    return f"{os.cpu_count()} cores, {cpu()}, Linux {platform.release()}"


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def render(per_call_rows, attach_rows, peer_rows, peer_attach_rows, peer_status, pause_rows=None):
    out = []
    if per_call_rows is None:  # --only-pause
        return pause.render(pause_rows, machine())
    out.append(f"machine: {machine()}")
    out.append("Per-call overhead (measured by the target; median of 5 runs, 3 with --quick; each row against the unhooked row of its loop: "
               "pointer, direct call, 6 arguments, str argument)")
    peers_ran = any(r["tool"] == "frida" for r in peer_rows)
    frida = {r["threads"]: r["ns"] for r in peer_rows if r["config"] == "CModule onEnter" and r.get("ns")}
    out.append(f"{'tool':<10} {'configuration':<42} {'threads':>7} {'ns/call':>9} {'+ns':>9} {'x base':>8} "
               f"{'x limit':>8} {'+limit':>8}  {'goal (+ns)':<24} {'met':<4}" + (f" {'x frida':>8}" if peers_ran else ""))
    for r in per_call_rows + peer_rows:
        fr = "-"
        if peers_ran and r.get("cfg", {}).get("frida") and frida.get(r["threads"]):
            fr = fmt(r["ns"] / frida[r["threads"]], 2)
        line = (f"{r['tool']:<10} {r['config']:<42} {r['threads']:>7} {fmt(r['ns'], 2):>9} {fmt(r.get('over'), 2):>9} "
                f"{fmt(r.get('ratio'), 1):>8} {fmt(r.get('x_limit'), 2):>8} {fmt(r.get('over_limit'), 2):>8}  "
                f"{r.get('goal', '-'):<24} {r.get('met', '-'):<4}" + (f" {fr:>8}" if peers_ran else "")
                + (f"  {r['note']}" if r.get("note") else ""))
        out.append(line.rstrip())
    out.append("Rows without hooks (unhooked, limits) are measured at the start and again at the end; each keeps the lower figure.")
    out.append("+ns: above the unhooked call of the row's loop. x limit: ns/call over the matching limit row's on that loop "
               "(its baseline plus the limit's +ns); +limit: ns above it.")
    out.append("Limits: \"entry trampoline\" (an extra jump that bumps a thread-local counter) for rows where nothing runs "
               "after the function; \"exit wrapper\" (a call, and the counter bumped after it returns) for the others; "
               "\"two TSC reads\" (the exit wrapper timing the call with rdtsc) for those that time every call.")
    out.append("goal: issue 14's, in ns above the unhooked call, at each thread count; met: in this run."
               + (" x frida: ns/call over Frida's CModule onEnter at as many threads." if peers_ran else ""))
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
    ap.add_argument("--quick", action="store_true", help="shorter runs, fewer attach rows (smoke test)")
    ap.add_argument("--only-pause", action="store_true",
                    help="only the \"pause seen by the process\" table (with --peers: Frida's rows too); printed, not written to RESULTS.md")
    ap.add_argument("--only-memory", action="store_true",
                    help="only the table of hookit's memory in a long --trace --output session; printed, not written to RESULTS.md")
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    a = ap.parse_args()

    if a.only_memory:
        print(memory.render(memory.rows(a.hookit, quick=a.quick)))
        return

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
    per_call_rows, baseline = per_call(a.hookit, threads, quick=a.quick)
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
    try:
        table += "\n\n" + memory.render(memory.rows(a.hookit, quick=a.quick))
    except Exception as e:
        table += f"\n\nMemory of a --trace --output session: failed: {e}"
    print(table)
    svg = os.path.join(ROOT, "bench", "overhead.svg")
    plot.overhead_svg(per_call_rows + peer_rows, svg)
    command = "make bench-peers" if a.peers else "python3 bench/bench.py --quick" if a.quick else "make bench"
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
