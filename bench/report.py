#!/usr/bin/env python3
"""Turns bench/run.sh's results.jsonl into docs/benchmarks/results.md and echo.png.

Targets are those of issues #5 and #16; every ratio compares numbers measured in the same run.
Scenarios 6 (Redis Cluster), 3c (fan-out ceiling), 3d (mass disconnect) and 7 (callgrind) also go
to their own files (cluster.md, fanout-ceiling.md, mass-disconnect.md, callgrind.md), so that a
partial run (ONLY=...) can update them without touching results.md.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                row = json.loads(line)
                rows[row["label"]] = row
    return rows


def ms(us):
    return f"{us / 1000:.2f}" if us is not None else "-"


def yes(ok):
    return "**met**" if ok else "**missed**"


def git(*args):
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def criterion_rows(root):
    rows = []
    if not root or not os.path.isdir(root):
        return rows
    for group in ("encode_event", "decode_inbound", "phoenix_decode", "phoenix_encode"):
        gdir = os.path.join(root, group)
        if not os.path.isdir(gdir):
            continue
        for name in sorted(os.listdir(gdir)):
            est = os.path.join(gdir, name, "new", "estimates.json")
            if not os.path.exists(est):
                continue
            with open(est) as f:
                e = json.load(f)
            rows.append((group, name, e["median"]["point_estimate"], e["mean"]["point_estimate"]))
    return rows


def run_header(a):
    """Which commit, when and on what machine; the run's own output is not a change."""
    out_rel = os.path.relpath(os.path.abspath(a.cluster_out or a.out), git("rev-parse", "--show-toplevel"))
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", f":!{out_rel}")
    return [
        f"- commit `{git('rev-parse', '--short', 'HEAD')}`"
        + (" (with uncommitted changes)" if dirty and dirty != "?" else ""),
        f"- {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{os.cpu_count()} CPUs ({cpu_model()}), Linux {platform.release()}, Redis {a.redis_version}",
        f"- everything on one machine over 127.0.0.1: Redis, the echo service, the gateway and the "
        f"load generator share the cores; the script took {a.elapsed} s",
        "",
    ]


CLUSTER_MODES = (
    ("standalone", "standalone Redis"),
    ("sharded", "cluster, sharded (SPUBLISH)"),
    ("onenode", "cluster, sharded, event and reply channels on one node"),
    ("classic", "cluster, classic PUBLISH"),
)
# A Channels topic is one channel, on one node whatever the mode.
CHANNELS_MODES = tuple(m for m in CLUSTER_MODES if m[0] != "onenode")


def per_message_us(row, net=False):
    """Redis CPU per message in microseconds (net: less what the servers use idle meanwhile)."""
    if not row or not row.get("published") or row["result"].get("scenario") == "failed":
        return None
    cpu = row["redis_cpu_s"] - (row.get("redis_idle_cpu_s", 0) if net else 0)
    return max(cpu, 0) / row["published"] * 1e6


def us(v, digits=2):
    return f"{v:.{digits}f}" if v is not None else "-"


def ratio(v, base, digits=2):
    return f"{v / base:.{digits}f}x" if v is not None and base else "-"


def fanout_ms(row):
    res = row["result"]
    return res.get("median_publish_to_last_ms") if res.get("scenario") == "channels_fanout" else None


def paired_ratios(rows, kind, mode):
    """mode / standalone, Redis CPU per message, for each round that measured both (they ran
    seconds apart, so the machine's load drifted least between them)."""
    out = []
    for label, row in sorted(rows.items()):
        parts = label.split("/")
        if len(parts) == 4 and parts[:3] == ["cluster", kind, mode]:
            base = rows.get(f"cluster/{kind}/standalone/{parts[3]}")
            v, b = per_message_us(row), per_message_us(base)
            if v is not None and b:
                out.append(v / b)
    return out


def paired_line(rows, kind):
    parts = []
    for mode in ("sharded", "onenode", "classic"):
        r = paired_ratios(rows, kind, mode)
        if r:
            parts.append(f"{mode} / standalone " + ", ".join(f"{x:.2f}" for x in r)
                         + f" (median {sorted(r)[len(r) // 2]:.2f})")
    return "Round by round: " + "; ".join(parts) + "." if parts else ""


def cluster_figures(rows):
    """Scenario 6 by (kind, mode), kind one of echo, chfan, chstream: each mode ran a few times,
    so the run with the median figure (a real run, not an average of them) and every run's figure,
    sorted."""
    runs = {}
    for label, row in rows.items():
        parts = label.split("/")
        if len(parts) >= 3 and parts[0] == "cluster":
            runs.setdefault((parts[1], parts[2]), []).append(row)
    median, spread = {}, {}
    for key, group in runs.items():
        figure = fanout_ms if key[0] == "chfan" else per_message_us
        ok = sorted((r for r in group if figure(r) is not None), key=figure)
        if ok:
            median[key] = ok[len(ok) // 2]
            spread[key] = [figure(r) for r in ok]
    return median, spread


def spread_of(spread, key):
    v = spread.get(key)
    return f"{v[0]:.2f}-{v[-1]:.2f} ({len(v)})" if v else "-"


def per_read(row):
    """Messages per read from a client socket: how well Redis's work is batched (each wake-up
    costs a system call or more, whatever it carries)."""
    reads = row.get("redis_reads")
    return f"{row['published'] / reads:.1f}" if reads else "-"


def rest_cpu(row):
    """What the rest of the machine used meanwhile (anything but Redis, gateway, service and
    load generator): how noisy the run was."""
    ours = sum(row.get(k, 0) for k in ("redis_cpu_s", "gateway_cpu_s", "echo_cpu_s"))
    return max(row.get("machine_cpu_s", 0) - ours - (row["result"].get("loadgen_cpu_s") or 0), 0)


def cluster_summary(c):
    """The short table of results.md: Redis CPU per message and the two ratios."""
    md = []
    w = md.append
    w("| traffic | standalone us/msg | sharded cluster us/msg | classic cluster us/msg | "
      "sharded / standalone (target <= 1.2) | classic / standalone | the same, net of idle | "
      "sharded, one node / standalone |")
    w("|---|---:|---:|---:|---:|---:|---|---:|")
    for kind, name in (("echo", "echo round trips (event + reply)"),
                       ("chstream", "Channels ticks")):
        v = {m: per_message_us(c.get((kind, m))) for m, _ in CLUSTER_MODES}
        n = {m: per_message_us(c.get((kind, m)), net=True) for m, _ in CLUSTER_MODES}
        base, sh = v["standalone"], v["sharded"]
        judged = f" {yes(sh / base <= 1.2)}" if sh and base else ""
        w(f"| {name} | {us(base)} | {us(sh)} | {us(v['classic'])} | {ratio(sh, base, 3)}{judged} | "
          f"{ratio(v['classic'], base)} | {ratio(n['sharded'], n['standalone'])} / "
          f"{ratio(n['classic'], n['standalone'])} | "
          f"{ratio(v['onenode'], base) if kind == 'echo' else '(one node anyway)'} |")
    return md


def cluster_report(c, spread, rows, a):
    """cluster.md: every figure of scenario 6."""
    md = []
    w = md.append
    w("# refract benchmarks: Redis Cluster, Redis CPU per message")
    w("")
    w("Generated by `bench/run.sh` (scenario 6; `ONLY=cluster bench/run.sh` runs just this); do "
      "not edit by hand. The rest of the benchmarks are in [results.md](results.md).")
    w("")
    md.extend(run_header(a))
    w("One standalone `redis-server` and a 3-master Redis Cluster (no replicas, same settings plus "
      "`cluster-enabled`) run side by side. **standalone**: the gateway and its services on the "
      "one server. **sharded**: the gateway in `mode = \"cluster\"`, events and replies by "
      "SSUBSCRIBE / SPUBLISH, so each message costs only the node owning its channel's slot. "
      "**classic**: the same cluster with classic pub/sub: the gateway (`mode = \"standalone\"`) "
      "on one node, the service on another, so the cluster bus carries every message to every "
      "node. **sharded, one node** (echo only): sharded, with the gateway's `response_channel` "
      "chosen so that its slot is on the node of the service's request channel, as both are on "
      "the standalone server: it separates what cluster mode costs from what spreading a round "
      "trip over two nodes' event loops costs.")
    w("")
    w("Redis CPU is the sum over the servers involved (1 or 3) of `INFO cpu` (user + system, "
      "microsecond resolution) across the run; messages are the PUBLISH and SPUBLISH calls the "
      "servers executed (from `INFO commandstats`; a message delivered over the cluster bus is "
      "not a call, so it counts once). *Net* subtracts what the same servers used idle for as "
      "long (measured just before: cron and cluster-bus pings).")
    w("")
    w("*Messages per Redis read* is the messages over the reads from client sockets the servers "
      "did (`INFO stats`): the more each read carries, the less each message costs.")
    w("")
    runs = max((len(v) for v in spread.values()), default=0)
    w(f"Redis's CPU per message falls as its load rises (more commands per wake-up), and the "
      f"machine is shared, so each mode ran {runs} times, in rotating order; the tables show the "
      f"run with each mode's median figure, and the range over all runs.")
    w("")
    w("Summary:")
    w("")
    md.extend(cluster_summary(c))
    w("")

    w("## Echo closed loop through the gateway")
    w("")
    echo = {m: c.get(("echo", m)) for m, _ in CLUSTER_MODES}
    n = next((r["result"].get("conns") for r in echo.values() if r), "?")
    w(f"{n} WebSocket connections, one 64-byte request in flight each; a round trip is two "
      f"messages (the event, the reply).")
    w("")
    w("| Redis | nodes | round trips/s | p99 ms | messages | Redis CPU s (idle share) | "
      "Redis us/message | Redis us/round trip | net us/message | ratio to standalone | "
      "us/message, all runs | messages per Redis read | gateway us/round trip | "
      "rest of machine, CPU s |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    base = per_message_us(echo["standalone"])
    for m, name in CLUSTER_MODES:
        row = echo[m]
        v = per_message_us(row)
        if v is None:
            w(f"| {name} | | (did not run or failed) | | | | | | | | | | | |")
            continue
        res = row["result"]
        trips = row["published"] / 2
        w(f"| {name} | {row['redis_nodes']} | {res['rate']:,.0f} | "
          f"{ms(res['latency']['p99_us'])} | {row['published']:,} | "
          f"{row['redis_cpu_s']:.2f} ({row['redis_idle_cpu_s']:.2f}) | {us(v)} | {us(2 * v)} | "
          f"{us(per_message_us(row, net=True))} | {ratio(v, base)} | "
          f"{spread_of(spread, ('echo', m))} | {per_read(row)} | "
          f"{row['gateway_cpu_s'] / trips * 1e6:.1f} | "
          f"{rest_cpu(row):.1f} |")
    w("")
    sh = per_message_us(echo["sharded"])
    if sh is not None and base:
        w(f"Sharded cluster / standalone, Redis CPU per message: **{sh / base:.3f}x** (target "
          f"<= 1.2x: {yes(sh / base <= 1.2)}); classic PUBLISH on the same cluster: "
          f"**{ratio(per_message_us(echo['classic']), base)}**. {paired_line(rows, 'echo')}")
        w("")

    w("## Channels")
    w("")
    fan = {m: c.get(("chfan", m)) for m, _ in CHANNELS_MODES}
    stream = {m: c.get(("chstream", m)) for m, _ in CHANNELS_MODES}
    r0 = next((r["result"] for r in fan.values() if r and r["result"].get("conns")), {})
    s0 = next((r["result"] for r in stream.values() if r and r["result"].get("conns")), {})
    w(f"Fan-out: {r0.get('conns', '?'):,} Phoenix sockets joined to one topic (presence off), "
      f"{len(r0.get('rounds', [])) or '?'} rounds of one tick (`PUBLISH to:fan:tick`, or "
      f"`SPUBLISH to:{{fan}} tick:...`), timed from the publish to the last socket's frame. One "
      f"tick costs Redis a few microseconds, less than it uses idle in a second, so Redis's CPU "
      f"per message is measured on a stream instead: {s0.get('conns', '?')} sockets, "
      f"{len(s0.get('rounds', [])) or '?'} rounds of {s0.get('burst', '?')} pipelined ticks.")
    w("")
    w("| Redis | fan-out: publish to last socket (median) | fan-out frames/s (median) | "
      "fan-out ms, all runs | stream: messages | stream: Redis CPU s (idle share) | "
      "Redis us/message | net us/message | ratio to standalone | us/message, all runs |")
    w("|---|---:|---:|---|---:|---:|---:|---:|---:|---|")
    base = per_message_us(stream["standalone"])
    for m, name in CHANNELS_MODES:
        f, st = fan[m], stream[m]
        fr = f["result"] if f else {}
        if fr.get("scenario") == "channels_fanout":
            timing = (f"{fr['median_publish_to_last_ms']} ms | {fr['median_frames_per_s']:,.0f} | "
                      f"{spread_of(spread, ('chfan', m))}")
        else:
            timing = "(did not run or failed) | |"
        v = per_message_us(st)
        if v is None:
            w(f"| {name} | {timing} | (did not run or failed) | | | | | |")
            continue
        w(f"| {name} | {timing} | {st['published']:,} | {st['redis_cpu_s']:.3f} "
          f"({st['redis_idle_cpu_s']:.3f}) | {us(v)} | {us(per_message_us(st, net=True))} | "
          f"{ratio(v, base)} | {spread_of(spread, ('chstream', m))} |")
    w("")
    w("The stream's rate is set by the gateway and the load generator, not by Redis, so what the "
      "servers use idle (three nodes' cron and bus pings against one server's) weighs on the "
      "figure per message in proportion to the run's length: where the idle share is a large part "
      "of the CPU, the net figure is the cost of the messages themselves.")
    w("")
    line = paired_line(rows, "chstream")
    if line:
        w(f"Stream, Redis CPU per message: {line[0].lower()}{line[1:]}")
        w("")
    return md


# ---- scenario 7: callgrind -------------------------------------------------------------------

# Where a function's instructions go, by its (demangled) symbol; the first match wins. Callgrind
# names a function by the symbol its code was compiled into, so inlined code counts where it was
# inlined (release builds inline a lot: `decode` is what is left of prism/phoenix decoding and
# serde_json's deserializer after inlining, and so on).
CATEGORIES = (
    ("decode", "Prism/Phoenix JSON decode",
     r"^refract::(prism|phoenix)::.*(decode|parse)|^serde_json::(de|read)::|^serde_core::de::|"
     r"^<&mut serde_json::de::|^<serde_json::read::|^core::str::converts::from_utf8|^core::str::validations"),
    ("encode", "Prism/Phoenix JSON encode",
     r"^refract::(prism|phoenix)::.*(encode|push|reply)|^serde_json::ser::|^serde_core::ser::|"
     r"^<&mut serde_json::ser::"),
    ("redis_read", "Redis read (RESP parse, pub/sub stream)",
     r"^redis::parser|^<redis::parser|^combine::|^<combine::|^redis::aio::pubsub|"
     r"^<redis::aio::pubsub|^redis::connection::Msg|^refract::redis::(pubsub|subscriber)|"
     r"ValueCodec"),
    ("redis_write", "Redis write (commands, pipelines)",
     r"^redis::(cmd|pipeline|aio::multiplexed_connection)|^<redis::(cmd|pipeline|aio::multiplexed)|"
     r"^refract::redis::(client|publisher)|^<redis::cmd::Cmd"),
    ("ws", "WebSocket read/write (tungstenite, upgraded hyper I/O)",
     r"tungstenite::|^<hyper::upgrade|^hyper::upgrade|^<hyper::common::io::rewind|"
     r"^<hyper_util::rt::tokio::TokioIo"),
    ("sched", "tokio scheduling, timers, sync and I/O driver",
     r"^tokio::|^<tokio::|^tokio_util::(sync|task)|^<tokio_util::(sync|task)|^futures_util::|"
     r"^<futures_util::|^<core::future::|^<core::pin::Pin<P> as core::future|^mio::|^<mio::"),
    ("alloc", "allocation (malloc, free, Vec growth)",
     r"^(malloc|free|realloc|calloc|cfree|_int_(malloc|free|realloc)|malloc_consolidate|"
     r"tcache_|__libc_(malloc|free|realloc|calloc))|^__rustc::__(rust|rdl)_|^alloc::raw_vec::|"
     r"^alloc::alloc::|^<alloc::raw_vec::"),
    ("memcpy", "memcpy/memmove/memset/memcmp", r"^__(mem|wmem)|^mem(cpy|move|set|cmp)|^__memcpy"),
    ("syscall", "system call wrappers (user side only)",
     r"^(__libc_)?(recv|send|read|write|epoll_wait|epoll_ctl|writev|readv|syscall|__GI_|"
     r"__libc_(recv|send|read|write))|^(recvfrom|sendto|recvmsg|sendmsg|__send|__recv|__write|"
     r"__read|clock_gettime|__clock_gettime)"),
    ("refract", "refract, other", r"^refract::|^<refract::"),
)
# Categories whose inclusive cost is not a phase: the scheduler and the socket/session tasks
# (`refract::ws::driver::drive`) poll everything else.
NO_INCLUSIVE = ("sched", "refract", "other")
_CAT_RE = [(key, re.compile(rx)) for key, _, rx in CATEGORIES]


def category(name):
    name = re.sub(r"'\d+$", "", name)
    for key, rx in _CAT_RE:
        if rx.search(name):
            return key
    return "other"


def parse_callgrind(path):
    """A callgrind dump's totals, each function's self cost and each call edge's inclusive cost
    (per event), keyed by function name (file and object ignored: inlined code shows up under
    several files)."""
    events, self_cost, edges = [], {}, {}
    fn = cfn = None
    in_call = False
    names = {}

    def name_of(v):
        m = re.match(r"\((\d+)\)(?: (.*))?$", v)
        if not m:
            return v
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), v)

    def add(d, key, values):
        cur = d.setdefault(key, [0] * len(events))
        for i, v in enumerate(values[: len(events)]):
            cur[i] += v

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                values = [int(x) for x in parts[1:]]
                if in_call:
                    add(edges, (fn, cfn), values)
                    in_call = False
                else:
                    add(self_cost, fn, values)
                continue
            key, _, value = line.partition("=")
            if key == "fn":
                fn = re.sub(r"'\d+$", "", name_of(value))
            elif key == "cfn":
                cfn = re.sub(r"'\d+$", "", name_of(value))
            elif key == "calls":
                in_call = True
            elif line.startswith("events:"):
                events = line.split(":", 1)[1].split()
    return events, self_cost, edges


def callgrind_split(path):
    """Per category: self instructions (a partition of the total) and inclusive instructions
    (the calls that enter the category from a function outside it, with all they call), and
    the top functions by inclusive cost. Only the first event (Ir) is split; totals of every
    event are returned."""
    events, self_cost, edges = parse_callgrind(path)
    n = len(events)
    totals = [sum(v[i] for v in self_cost.values()) for i in range(n)]
    cat = {f: category(f) for f in set(self_cost) | {c for _, c in edges} | {a for a, _ in edges}}
    selfs, incl = {}, {}
    for f, v in self_cost.items():
        selfs[cat[f]] = selfs.get(cat[f], 0) + v[0]
    inclusive = {f: v[0] for f, v in self_cost.items()}
    for (a, b), v in edges.items():
        if a != b:
            inclusive[a] = inclusive.get(a, 0) + v[0]
        if cat.get(a) != cat[b]:
            incl[cat[b]] = incl.get(cat[b], 0) + v[0]
    # Inclusive per function double-counts through recursion (a task's poll polls tasks), so
    # the categories without an inclusive figure list their top functions by self cost.
    top = {}
    for source, no_incl in ((inclusive, False), ({f: v[0] for f, v in self_cost.items()}, True)):
        for f, v in sorted(source.items(), key=lambda kv: -kv[1]):
            if (cat[f] in NO_INCLUSIVE) != no_incl:
                continue
            lst = top.setdefault(cat[f], [])
            if len(lst) < 3:
                lst.append((f, v))
    return dict(zip(events, totals)), selfs, incl, top


def cg_rows(rows, work):
    """Scenario 7's figures: (kind, row, dump split, echo service's split or None)."""
    out = []
    for label, row in sorted(rows.items()):
        parts = label.split("/")
        if parts[0] != "callgrind" or row["result"].get("scenario") == "failed":
            continue
        kind = parts[1]
        dumps = {"echo": ("cg-gateway-echo.dump", "cg-echo-service.dump"),
                 "chfan": ("cg-gateway-fan.dump", None)}[kind]
        gw = os.path.join(work or "", dumps[0])
        if not work or not os.path.exists(gw):
            continue
        svc = os.path.join(work, dumps[1]) if dumps[1] else None
        out.append((kind, row, callgrind_split(gw),
                    callgrind_split(svc) if svc and os.path.exists(svc) else None))
    return out


def units(kind, res):
    """Round trips done (echo) or frames delivered (fan-out)."""
    if kind == "echo":
        return res["latency"]["count"]
    return res["conns"] * res["published"] * res.get("burst", 1)


def callgrind_summary(cg):
    md = []
    w = md.append
    w("| measure | gateway instructions | per unit | system calls per unit | echo service per unit | gateway / echo service |")
    w("|---|---:|---:|---:|---:|---:|")
    for kind, row, (tot, _, _, _), svc in cg:
        res = row["result"]
        n = units(kind, res)
        what = (f"echo round trip ({n:,} over {res['conns']} connections)" if kind == "echo"
                else f"Channels frame delivered ({res['conns']:,} sockets x {res['published']} broadcasts)")
        sys_ = f"{tot['sysCount'] / n:.2f}" if "sysCount" in tot else "-"
        if svc:
            e = svc[0]["Ir"] / n
            es, ratio_ = f"{e:,.0f}", f"{tot['Ir'] / n / e:.2f}x"
        else:
            es = ratio_ = "-"
        w(f"| {what} | {tot['Ir']:,} | **{tot['Ir'] / n:,.0f}** | {sys_} | {es} | {ratio_} |")
    return md


def callgrind_report(cg, a):
    md = []
    w = md.append
    w("# refract benchmarks: instructions per round trip and per fan-out frame (callgrind)")
    w("")
    w("Generated by `bench/run.sh` (scenario 7; `ONLY=callgrind bench/run.sh` runs just this, in "
      "about a minute); do not edit by hand. The rest of the benchmarks are in "
      "[results.md](results.md).")
    w("")
    md.extend(run_header(a))
    w("The gateway runs under `valgrind --tool=callgrind`, which counts the instructions it "
      "executes (Ir): the same binary and load give (nearly) the same count however busy the "
      "machine is, so two builds can be compared instruction for instruction. The load generator "
      "zeroes the counters (`callgrind_control -z`) once its clients are connected (or joined), "
      "does a fixed amount of work, and dumps them (`callgrind_control -d`) before anything "
      "closes: start-up, handshakes, joins and shutdown are not counted.")
    w("")
    w("- **echo**: a fixed number of closed-loop round trips (64-byte text, one in flight per "
      "connection) through the `/cg` route, whose echo service (`refract-bench echo`, the same "
      "code as in scenario 1) runs under callgrind too, zeroed and dumped at the same moments: "
      "its instructions per round trip are the comparison the issue asks for (it reads a "
      "message from Redis, decodes the JSON, encodes a reply and publishes it).")
    w("- **Channels**: sockets joined to one topic (presence off); each broadcast is one "
      "`PUBLISH to:fan:tick`; instructions per frame = all the gateway's instructions between "
      "zero and dump / (sockets x broadcasts), the 100 ms pauses between broadcasts included.")
    w("")
    w("Caveats: Ir counts user-space instructions only; the kernel's share (socket reads and "
      "writes, epoll) is not in it, so *system calls per unit* (callgrind's `sysCount`) is shown "
      "next to it. Under callgrind the process is ~50x slower and its threads run one at a time, "
      "so batching (how many messages one wake-up carries) differs from a normal run; the count "
      "is stable for a given build and load, and that is what it is for. Timer-driven work "
      "during the measured phase (heartbeat checks, the presence worker) is included.")
    w("")
    md.extend(callgrind_summary(cg))
    w("")
    for kind, row, (tot, selfs, incl, top), svc in cg:
        n = units(kind, row["result"])
        unit = "round trip" if kind == "echo" else "frame"
        w(f"## Gateway instructions per {unit}, by category"
          + (" (echo)" if kind == "echo" else " (Channels fan-out)"))
        w("")
        w("*Self* is the instructions executed in the category's own functions (the self columns "
          "add up to the total). *Inclusive* is the instructions of the calls entering the "
          "category from outside it, with everything they call (so decode includes the "
          "allocation it does, and the inclusive columns overlap); for tokio scheduling and "
          "refract's own tasks the inclusive figure would be every task's poll, so only their "
          "self cost is shown.")
        w("")
        w(f"| category | Ir per {unit}, self | share | Ir per {unit}, inclusive | top functions, Ir per {unit} (inclusive; self where there is no inclusive figure) |")
        w("|---|---:|---:|---:|---|")
        keys = [k for k, _, _ in CATEGORIES] + ["other"]
        label = {k: name for k, name, _ in CATEGORIES}
        label["other"] = "other (std, libc, hyper, tracing, ...)"
        for k in keys:
            sv = selfs.get(k, 0)
            iv = "-" if k in NO_INCLUSIVE else f"{incl.get(k, 0) / n:,.0f}"
            tops = "; ".join(f"`{f[:90]}` {v / n:,.0f}" for f, v in top.get(k, [])[:2])
            w(f"| {label[k]} | {sv / n:,.0f} | {sv / tot['Ir'] * 100:.1f}% | {iv} | {tops} |")
        w(f"| **total** | **{tot['Ir'] / n:,.0f}** | 100% | | |")
        w("")
    w("## Which symbols go where")
    w("")
    w("Functions are put in the first category whose pattern (a Python regex on the demangled "
      "name, recursion suffix `'N` removed) matches; anything else is *other*.")
    w("")
    w("| category | pattern |")
    w("|---|---|")
    for _, name, rx in CATEGORIES:
        w(f"| {name} | `{rx.replace('|', '&#124;')}` |")
    w("")
    w("Reproduce: `ONLY=callgrind bench/run.sh` (knobs `CG_ROUND_TRIPS`, `CG_CONNS`, "
      "`CG_FAN_CONNS`, `CG_FAN_ROUNDS`; `GATEWAY_BIN=path` to count another build; the dumps stay "
      "in the work directory for `callgrind_annotate --inclusive=yes`).")
    w("")
    return md


# ---- scenario 3c: the fan-out ceiling ---------------------------------------------------------

def fanceil(rows):
    """{n: [(raw_ms, refract_ms, raw row, refract row)]} for each repetition that measured both."""
    out = {}
    for label, row in rows.items():
        parts = label.split("/")
        if len(parts) == 4 and parts[:2] == ["fanceil", "raw"]:
            other = rows.get(f"fanceil/refract/{parts[2]}/{parts[3]}")
            r, g = row["result"], other["result"] if other else {}
            if r.get("scenario") == "raw_fanout" and g.get("scenario") == "channels_fanout":
                out.setdefault(int(parts[2]), []).append(
                    (r["median_publish_to_last_ms"], g["median_publish_to_last_ms"], row, other))
    return out


def fanceil_summary(fc):
    md = []
    w = md.append
    w("| sockets | raw ceiling: publish to last (median) | refract Channels (median) | "
      "refract / ceiling, frames/s (median of pairs) | each pair | target | CPU per frame, us: ceiling / refract |")
    w("|---:|---:|---:|---:|---|---|---:|")
    for n in sorted(fc):
        pairs = fc[n]
        ratios = sorted(raw / ref for raw, ref, _, _ in pairs)
        med = ratios[len(ratios) // 2]
        raws = sorted(p[0] for p in pairs)
        refs = sorted(p[1] for p in pairs)
        target = yes(med >= 0.7) if n >= 10_000 else "(not a target)"

        def cpu(row):
            res = row["result"]
            frames = res["conns"] * res["published"]
            return row["gateway_cpu_s"] / frames * 1e6 if frames else 0

        c_raw = sorted(cpu(p[2]) for p in pairs)[len(pairs) // 2]
        c_ref = sorted(cpu(p[3]) for p in pairs)[len(pairs) // 2]
        w(f"| {n:,} | {raws[len(raws) // 2]} ms | {refs[len(refs) // 2]} ms | **{med:.2f}** | "
          f"{', '.join(f'{x:.2f}' for x in ratios)} | {target} | {c_raw:.2f} / {c_ref:.2f} |")
    return md


def fanceil_report(fc, a):
    md = []
    w = md.append
    w("# refract benchmarks: the fan-out ceiling")
    w("")
    w("Generated by `bench/run.sh` (scenario 3c; `ONLY=fanout-ceiling bench/run.sh` runs just "
      "this); do not edit by hand. The rest of the benchmarks are in [results.md](results.md).")
    w("")
    md.extend(run_header(a))
    w("**raw ceiling**: `refract-bench rawfanout`, a minimal tokio program (no Redis, no JSON, no "
      "Phoenix): it accepts the WebSocket clients (handshake by hand), and for each text it gets "
      "on a control connection encodes one text frame once and writes those bytes to every "
      "socket (a `tokio::sync::broadcast` of the shared frame, one task per socket). The text is "
      "the one refract sends for the tick, so the frames are the same size. **refract**: Channels "
      "sockets joined to one topic (presence off), one `PUBLISH to:fan:tick` per broadcast. Both "
      "driven by `refract-bench chfanout` (with `--raw` for the ceiling): the same clients, "
      "timed from the publish (the control write, or the PUBLISH) to the last socket holding "
      "its frame; each figure is the median of its broadcasts.")
    w("")
    w("The ratio is refract's frames/s over the ceiling's, i.e. ceiling time / refract time, "
      "for each pair of runs (ceiling and refract back to back, the order alternating), and "
      "its median. CPU per frame is the server's CPU (from /proc, 10 ms ticks) over the "
      "frames, the whole run (connecting and joining included).")
    w("")
    md.extend(fanceil_summary(fc))
    w("")
    w("Reproduce: `ONLY=fanout-ceiling bench/run.sh` (knobs `CEIL_FAN_CONNS`, `CEIL_REPEAT`, "
      "`FAN_ROUNDS`).")
    w("")
    return md


# ---- scenario 3d: mass disconnect -------------------------------------------------------------

def mass_rows(rows):
    return [r for l, r in sorted(rows.items(), key=lambda kv: kv[0])
            if l.startswith("mass/") and r["result"].get("scenario") == "mass_disconnect"]


def mass_summary(mr):
    md = []
    w = md.append
    w("| members | presence | joined in | `refract_channels_joined` back to 0 | presence hash empty | clean (both) | clients saw their close done |")
    w("|---:|---|---:|---:|---:|---:|---:|")
    for row in mr:
        r = row["result"]
        pres = f"{r['presence_clean_ms']:.0f} ms ({r['presence_entries_before']:,} entries)" if r["presence"] else "(presence off)"
        w(f"| {r['conns']:,} | {'on' if r['presence'] else 'off'} | {r['joined_in_ms'] / 1000:.2f} s | "
          f"{r['members_clean_ms']:.0f} ms | {pres} | **{r['clean_ms']:.0f} ms** | "
          f"{r['clients_closed_ms']:.0f} ms ({r['clients_closed']:,}) |")
    return md


def mass_report(mr, a):
    md = []
    w = md.append
    w("# refract benchmarks: mass disconnect")
    w("")
    w("Generated by `bench/run.sh` (scenario 3d; `ONLY=mass-disconnect bench/run.sh` runs just "
      "this); do not edit by hand. The rest of the benchmarks are in [results.md](results.md).")
    w("")
    md.extend(run_header(a))
    w("N Phoenix sockets join one topic; once the gateway's `refract_channels_joined` gauge (and, "
      "with presence on, the topic's `refract:presence:<topic>` hash) shows all of them, every "
      "socket sends its WebSocket close at once. Timed from that moment to the gauge back at 0 "
      "and the hash empty (`HLEN`), polled every 5 ms (plus a scrape of /metrics each time).")
    w("")
    w("With presence on, every join is announced to every member (O(n^2) frames: 50 million at "
      "10,000 members, far beyond a benchmark's minutes at ~50,000 frames/s), so the presence part "
      "runs with fewer members (`MASS_PRESENCE_CONNS`), and a per-socket queue "
      "(`channels.outbound_queue`) large enough for the join phase's announcements.")
    w("")
    md.extend(mass_summary(mr))
    w("")
    w("Reproduce: `ONLY=mass-disconnect bench/run.sh` (knobs `MASS_CONNS`, `MASS_PRESENCE_CONNS`).")
    w("")
    return md


def plot(closed, names, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"ceiling": ("tab:gray", "o", "--"), "refract": ("tab:blue", "s", "-")}
    for name in names:
        pts = sorted((n, r) for (who, n), r in closed.items() if who == name)
        if not pts:
            continue
        color, marker, ls = styles.get(name, ("tab:orange", "^", "-"))
        xs = [n for n, _ in pts]
        ax1.plot(xs, [r["rate"] for _, r in pts], marker=marker, ls=ls, color=color, label=name)
        ax2.plot(xs, [r["latency"]["p99_us"] / 1000 for _, r in pts], marker=marker, ls=ls,
                 color=color, label=name)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("connections (1 request in flight each)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax1.set_ylabel("echo round trips / s")
    ax1.set_title("Throughput")
    ax1.set_ylim(bottom=0)
    ax2.set_ylabel("p99 latency (ms)")
    ax2.set_yscale("log")
    ax2.set_title("p99 round-trip latency")
    fig.suptitle("refract vs the no-gateway ceiling (echo through Redis, same machine, same run)")
    fig.tight_layout()
    path = os.path.join(out, "echo.png")
    fig.savefig(path, dpi=110)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--criterion")
    ap.add_argument("--echo")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cluster-out", help="where cluster.md goes (default: --out)")
    ap.add_argument("--work", help="the run's work directory (callgrind dumps)")
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--redis-version", default="?")
    a = ap.parse_args()
    rows = load(a.results)

    closed = {}
    for label, row in rows.items():
        res = row["result"]
        if res.get("scenario") in ("ws", "ceiling") and "/" in label and not label.startswith("cluster/"):
            who, n = label.rsplit("/", 1)
            res["_cpu"] = row
            closed[(who, int(n))] = res
    names = []
    for who, _ in sorted(closed, key=lambda k: (k[0] != "ceiling", k[0] != "refract", k[0])):
        if who not in names:
            names.append(who)
    conns = sorted({n for _, n in closed})

    md = []
    w = md.append
    w("# refract benchmarks")
    w("")
    w("Generated by `bench/run.sh` (one command, from a clean checkout); do not edit by hand. "
      "How to read these numbers, the memory breakdown and the profile are in "
      "[analysis.md](analysis.md).")
    w("")
    md += run_header(a)

    # ---- 1
    w("## 1. Echo round trips against the ceiling")
    w("")
    w("Closed loop: each connection keeps one 64-byte request in flight (send, await the echo, "
      "repeat). **ceiling** = no gateway: virtual clients PUBLISH the same `message` event JSON "
      "straight to Redis and one subscriber routes the echoes back by id. **refract** = real "
      "WebSocket clients through the gateway. Same echo service, same Redis.")
    w("")
    w("CPU columns are CPU seconds used during the run (12 s wall with warm-up) by each process; "
      "*other* is what the rest of the machine used meanwhile (anything but these four), which "
      "shows how noisy the run was. Two cores make 24 CPU seconds available in 12 s.")
    w("")
    w("| conns | who | round trips/s | p50 ms | p99 ms | p99.9 ms | max ms | timeouts | CPU s: gateway / redis / echo / loadgen / other |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for n in conns:
        for who in names:
            r = closed.get((who, n))
            if not r:
                continue
            lat = r["latency"]
            c = r["_cpu"]
            gw = f"{c['gateway_cpu_s']:.1f}" if c.get("gateway_cpu_s") else "-"
            ours = sum(c.get(k, 0) for k in ("gateway_cpu_s", "redis_cpu_s", "echo_cpu_s"))
            ours += r.get("loadgen_cpu_s") or 0
            other = c.get("machine_cpu_s", ours) - ours
            w(f"| {n} | {who} | {r['rate']:,.0f} | {ms(lat['p50_us'])} | {ms(lat['p99_us'])} | "
              f"{ms(lat['p999_us'])} | {ms(lat['max_us'])} | {r['timeouts']} | "
              f"{gw} / {c.get('redis_cpu_s', 0):.1f} / {c.get('echo_cpu_s', 0):.1f} / "
              f"{(r.get('loadgen_cpu_s') or 0):.1f} / {max(other, 0):.1f} |")
    w("")
    w("Against the targets (rate at least 0.7 of the ceiling, p99 at most 2x the ceiling's):")
    w("")
    w("| conns | rate ratio | target 0.7 | p99 ratio | target 2.0 |")
    w("|---:|---:|---|---:|---|")
    for n in conns:
        c, r = closed.get(("ceiling", n)), closed.get(("refract", n))
        if not (c and r) or not c["rate"]:
            continue
        rate = r["rate"] / c["rate"]
        p99 = r["latency"]["p99_us"] / max(c["latency"]["p99_us"], 1)
        judged = n in (100, 1000)
        w(f"| {n} | {rate:.2f} | {yes(rate >= 0.7) if judged else '(not a target)'} | {p99:.2f} | "
          f"{yes(p99 <= 2.0) if judged else '(not a target)'} |")
    w("")
    w("Gateway CPU per round trip (gateway CPU seconds / round trips in the same run; Redis's "
      "only where the gateway uses the run's own Redis):")
    w("")
    w("| conns | gateway | gateway us CPU per round trip | echo service us CPU per round trip | "
      "gateway / echo service | Redis us per round trip (with / without gateway) |")
    w("|---:|---|---:|---:|---:|---:|")
    for n in conns:
        c = closed.get(("ceiling", n))
        for who in names:
            r = closed.get((who, n))
            if who == "ceiling" or not (c and r) or not r["_cpu"].get("gateway_cpu_s"):
                continue
            total_r = r["rate"] * r["duration_s"]
            total_c = c["rate"] * c["duration_s"]
            # CPU covers warm-up too: spread it over the whole run's round trips.
            span_r = (r["duration_s"] + 2) / r["duration_s"]
            span_c = (c["duration_s"] + 2) / c["duration_s"]
            if total_r and total_c:
                g = r["_cpu"]["gateway_cpu_s"] / (total_r * span_r) * 1e6
                rr = r["_cpu"]["redis_cpu_s"] / (total_r * span_r) * 1e6
                rc = c["_cpu"]["redis_cpu_s"] / (total_c * span_c) * 1e6
                redis = f"{rr:.1f} / {rc:.1f}" if who == "refract" else "-"
                # The echo service serves every gateway of the run; its CPU is only known for
                # the gateways that use the run's own Redis.
                e = r["_cpu"].get("echo_cpu_s", 0) / (total_r * span_r) * 1e6
                es, ratio_ = (f"{e:.1f}", f"{g / e:.2f}x") if e and who == "refract" else ("-", "-")
                w(f"| {n} | {who} | {g:.1f} | {es} | {ratio_} | {redis} |")
    w("")
    png = plot(closed, names, a.out) if closed else None
    if png:
        w("![throughput and p99 against connections](echo.png)")
        w("")

    # ---- 2
    idle = next((r["result"] for l, r in rows.items() if l.startswith("idle/")), None)
    w("## 2. Idle connections and memory")
    w("")
    if idle and idle.get("scenario") == "idle":
        per = idle.get("rss_bytes_per_conn")
        anon = idle.get("anon_bytes_per_conn")
        acc = idle["accepted_ms"]
        ann = idle.get("announced_ms")
        b, af = idle.get("gateway_rss_before") or {}, idle.get("gateway_rss_after") or {}
        w(f"{idle['conns']:,} WebSocket connections opened to one route (256 handshakes in flight at "
          f"a time), held idle; gateway RSS from `/proc/<pid>/status` before connecting and 2 s "
          f"after the last one.")
        w("")
        w("| measure | value | target | |")
        w("|---|---:|---:|---|")
        w(f"| connections held | {idle['held']:,} (errors: {idle['connect_errors']}; gateway's "
          f"`refract_connections`: {idle.get('gateway_connections_metric')}) | {idle['conns']:,} | "
          f"{yes(idle['held'] == idle['conns'])} |")
        w(f"| all accepted (handshakes done) | {acc / 1000:.2f} s | 10 s | {yes(acc <= 10_000)} |")
        w(f"| all announced (connect events seen on Redis) | "
          f"{(ann / 1000) if ann else float('nan'):.2f} s ({idle['announced']:,} events) | 10 s | "
          f"{yes(bool(ann) and ann <= 10_000)} |")
        if per is not None:
            w(f"| gateway RSS per connection | {per:,.0f} B ({per / 1024:.2f} KiB) | 4 KiB | "
              f"{yes(per <= 4096)} |")
            w(f"| of which anonymous (heap, stacks) | {anon:,.0f} B | | |")
        w(f"| gateway RSS before / after | {b.get('vm_rss_kib', 0) / 1024:.1f} MiB / "
          f"{af.get('vm_rss_kib', 0) / 1024:.1f} MiB | | |")
        fl = idle.get("fresh_latency") or {}
        w(f"| round trips on a new connection while all are held | {idle['fresh_round_trips']}/100, "
          f"p50 {ms(fl.get('p50_us'))} ms, max {ms(fl.get('max_us'))} ms | works | "
          f"{yes(idle['fresh_round_trips'] > 0)} |")
        w(f"| round trips on held connections | {idle['held_round_trips']}/{idle['held_probed']} | | |")
    else:
        w("(did not run or failed; see results.jsonl)")
    w("")

    # ---- 3
    fan = next((r["result"] for l, r in rows.items() if l.startswith("fanout/")), None)
    w("## 3. Fan-out (Channels stand-in)")
    w("")
    if fan and fan.get("scenario") == "fanout":
        w(f"**Stand-in until Channels exist:** {fan['conns']:,} clients on one route; a broadcaster "
          f"learned their ids from the connect events and, per broadcast, pipelines one PUBLISH "
          f"per id ({fan['ids_learned']:,} replies) into Redis on one connection. Timed from the "
          f"pipeline leaving the broadcaster to the last client holding its frame "
          f"(the clients are in the same process, same clock).")
        w("")
        w("| broadcast | delivered | publish to last client | Redis done with the pipeline | client frames/s |")
        w("|---:|---:|---:|---:|---:|")
        for r in fan["rounds"]:
            w(f"| {r['round'] + 1} | {r['delivered']:,} | {r['publish_to_last_ms']:.1f} ms | "
              f"{r['redis_pipeline_ms']:.1f} ms | {r['frames_per_s']:,.0f} |")
        med = fan.get("median_frames_per_s") or 0
        w("")
        w(f"Median: **{med:,.0f} frames/s**, publish to last client "
          f"**{fan.get('median_publish_to_last_ms')} ms**. Target 500,000 frames/s: "
          f"{yes(med >= 500_000)}.")
    else:
        w("(did not run or failed; see results.jsonl)")
    w("")

    # ---- 3b
    w("## 3b. Channels fan-out")
    w("")
    ch = [r["result"] for l, r in sorted(rows.items()) if l.startswith("chfanout/")]
    if ch:
        w("N Phoenix sockets joined to one topic (presence off); one `PUBLISH to:fan:tick` per "
          "round, timed from the publish to the last socket's frame.")
        w("")
        w("| sockets | frames/s (median) | publish to last socket (median) | target 500,000 frames/s |")
        w("|---:|---:|---:|---|")
        for c in sorted((c for c in ch if c.get("scenario") == "channels_fanout"), key=lambda c: c["conns"]):
            w(f"| {c['conns']:,} | {c['median_frames_per_s']:,.0f} | {c['median_publish_to_last_ms']} ms | "
              f"{yes(c['median_frames_per_s'] >= 500_000)} |")
    else:
        w("(did not run or failed; see results.jsonl)")
    w("")

    # ---- 3c, 3d
    fc = fanceil(rows)
    w("## 3c. Fan-out ceiling")
    w("")
    if fc:
        w("refract's Channels fan-out against a minimal tokio server writing one pre-encoded frame "
          "to each socket, same clients, same timing (target: >= 0.7 of the ceiling at 10,000 "
          "sockets). Details: [fanout-ceiling.md](fanout-ceiling.md).")
        w("")
        md.extend(fanceil_summary(fc))
    else:
        w("(did not run or failed; see results.jsonl)")
    w("")
    mr = mass_rows(rows)
    w("## 3d. Mass disconnect")
    w("")
    if mr:
        w("Every member of one topic closes at once: time until membership and presence are "
          "clean. Details: [mass-disconnect.md](mass-disconnect.md).")
        w("")
        md.extend(mass_summary(mr))
    else:
        w("(did not run or failed; see results.jsonl)")
    w("")

    # ---- 4, 5
    w("## 4. HTTP polling")
    w("")
    poll = next((r for l, r in rows.items() if l.startswith("polling/")), None)
    if poll and poll["result"].get("scenario") == "polling":
        p = poll["result"]
        w(f"{p['conns']:,} idle connections on a route whose legacy HTTP service (a minimal "
          f"keep-alive server in the load generator) is polled every second.")
        w("")
        w("| configured polls/s | achieved polls/s | ratio (target >= 0.95) | gateway CPU share |")
        w("|---:|---:|---:|---:|")
        w(f"| {p['configured_polls_per_s']:,.0f} | {p['achieved_polls_per_s']:,.1f} | {p['ratio']} "
          f"{yes(p['ratio'] >= 0.95)} | {p['gateway_cpu_share']} of one core |")
    else:
        w("(did not run or failed; see results.jsonl)")
    w("")
    w("## 5. Any gateway")
    w("")
    w("`refract-bench ws --url ws://HOST:PORT/PATH --conns N` drives any gateway whose route echoes "
      "text; `refract-bench echo --redis URL --channel CH` is a Prism echo service for it. "
      "`EXTRA_WS_URL=... EXTRA_NAME=... bench/run.sh` adds that gateway to the table above.")
    w("")

    # ---- 6
    cluster, spread = cluster_figures(rows)
    w("## 6. Redis Cluster: Redis CPU per message")
    w("")
    if cluster:
        w("The gateway's events and replies (and Channels ticks) through a 3-master Redis Cluster "
          "next to a standalone Redis, same run. Sharded pub/sub costs one node per message, "
          "classic PUBLISH on a cluster every node. Details, throughput and fan-out timings: "
          "[cluster.md](cluster.md).")
        w("")
        md.extend(cluster_summary(cluster))
    else:
        w("(did not run or failed; see results.jsonl)")
    w("")

    # ---- 7
    cg = cg_rows(rows, a.work)
    w("## 7. Instructions per round trip and per fan-out frame (callgrind)")
    w("")
    if cg:
        w("Counted by callgrind, not timed: stable whatever else the machine does. The split by "
          "function and the symbol patterns: [callgrind.md](callgrind.md).")
        w("")
        md.extend(callgrind_summary(cg))
    else:
        w("(did not run or failed; see results.jsonl)")
    w("")

    # ---- criterion
    crit = criterion_rows(a.criterion)
    w("## Criterion: the pure hot-path functions")
    w("")
    if crit:
        w("`cargo bench -p refract-bench --bench prism` (1 s warm-up, 2 s measurement each).")
        w("")
        w("| function | input | median | mean |")
        w("|---|---|---:|---:|")
        for group, name, med, mean in crit:
            label = {"encode_event": "prism::encode_event", "decode_inbound": "prism::decode_inbound",
                     "phoenix_decode": "phoenix::decode_*", "phoenix_encode": "phoenix (encode)"}[group]
            w(f"| `{label}` | {name} | {med:.0f} ns | {mean:.0f} ns |")
    else:
        w("(not run)")
    w("")

    if os.path.exists(os.path.join(a.out, "profile.txt")):
        w("## Profile")
        w("")
        w("The flat `perf` profile of the gateway under the 1,000-connection closed loop is in "
          "[profile.txt](profile.txt); what it means is in [analysis.md](analysis.md).")
        w("")
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(md))
    own = a.cluster_out or a.out
    for name, figures, report in (("callgrind", cg, callgrind_report),
                                  ("fanout-ceiling", fc, fanceil_report),
                                  ("mass-disconnect", mr, mass_report)):
        if figures:
            with open(os.path.join(own, f"{name}.md"), "w") as f:
                f.write("\n".join(report(figures, a)))
    if cluster:
        out = a.cluster_out or a.out
        with open(os.path.join(out, "cluster.md"), "w") as f:
            f.write("\n".join(cluster_report(cluster, spread, rows, a)))
        with open(os.path.join(out, "cluster.jsonl"), "w") as f:
            for label, row in rows.items():
                if label.startswith("cluster/"):
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
