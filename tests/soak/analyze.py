#!/usr/bin/env python3
"""The soak test's verdict (scripts/soak): reads the sampler's CSV
(tests/soak/sample.py: time_s,module,pid,metric,value), fits a
least-squares slope per module, worker and metric after a warm-up, and
fails when something grows without bound. Also draws the memory plot.

    analyze.py CSV [--warmup S] [--allow-restarts] [--plot PNG] [--summary TXT]

Exit 0: nothing grows; 1: a growth or a restart (the lines starting
`FAIL` say which); 2: bad input. The rules, as docs/operations.md ("Soak
test") explains them:

- Warm-up: the first `warmup` seconds of each worker's life are not judged
  (default: a quarter of the run, at least 30 s, at most 10 min): the
  line's statistics modules fill their rolling windows, modules take their
  first snapshots, and a fresh worker copies the fork server's pages it
  writes to. A restarted worker (a new pid) gets its own warm-up.
- Growth: for each metric, the slope S over the judged window (length W
  minutes) fails when it exceeds both the metric's rate threshold R and
  its noise floor F spread over the window (S > max(R, F / W)), and the
  slope over the window's second half exceeds the same. The floor is how
  much a healthy process can step up once in a short run (a page touched
  for the first time, a collector's new span); the second half keeps a
  one-time step in the first half from passing for a leak, while a real
  leak grows in both halves.
- Go workers: a Go module on wasm collects garbage only once its heap
  reaches the collector's minimum goal (4 MiB; the runtime's sysmon, which
  forces a collection every 2 minutes elsewhere, does not run on wasm), so
  its memory rises at its garbage rate until then, for hours
  in a module that makes little garbage, and stays flat after (linear
  memory never shrinks). A Go worker's growing memory fails only above
  GO_CEILING_KIB; below, the summary notes it (`NOTE`).
- A shrink is never a failure. A restart is reported with its time and
  pids, never fitted across: each worker is its own series. A restart of
  a module fails the soak (the demo's line has no module that crashes by
  design) unless --allow-restarts, which makes it a warning.
"""

import argparse
import csv
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field

SUPERVISOR = "[supervisor]"
FORK_SERVER = "[fork-server]"

# metric: (rate R per minute, noise floor F, unit). Why these numbers:
# docs/operations.md, "Soak test".
# USS (uss_kib) and PSS are recorded and plotted, not judged: their clean
# part moves with other processes mapping the same files (dirty_kib is
# the part of USS a leak grows).
THRESHOLDS = {
    "dirty_kib": (16.0, 1024.0, "KiB"),
    "cgroup_kib": (32.0, 2048.0, "KiB"),
    "fds": (0.0, 2.0, "fds"),
    "threads": (0.0, 2.0, "threads"),
    "inbox_depth": (0.0, 64.0, "messages"),
    "depth": (0.0, 64.0, "messages"),
}

# A Go worker's private dirty or cgroup memory below this is a heap before
# its first collection, not a leak: gw-historian's, snapshotting every
# 100 ms, rose to 5.0 MiB within 30 s of its start, then held at 5.2-5.4
# MiB for the 2.5 minutes measured.
GO_CEILING_KIB = 8192.0
GO_CEILED = ("dirty_kib", "cgroup_kib")

# A window needs this many samples and seconds to be judged.
MIN_POINTS = 8
MIN_WINDOW_S = 30.0


def default_warmup(duration_s):
    """A quarter of the run, at least 30 s, at most 10 min."""
    return min(600.0, max(30.0, duration_s / 4))


def slope_per_min(points):
    """Least-squares slope of [(t_s, value)] in value per minute; None for
    fewer than two distinct times."""
    n = len(points)
    if n < 2:
        return None
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    sxx = sum((t - mt) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    sxv = sum((t - mt) * (v - mv) for t, v in points)
    return sxv / sxx * 60.0


@dataclass
class Series:
    """One worker's (or ring's) values of one metric."""

    module: str
    metric: str
    pid: str
    points: list = field(default_factory=list)  # [(t_s, value)]


@dataclass
class Verdict:
    module: str
    metric: str
    pid: str
    first: float  # the worker's first and last sample, s
    last: float
    lo: float  # range over the worker's whole life
    hi: float
    judged: bool  # long enough after the warm-up to fit
    window_min: float = 0.0
    slope: float = 0.0  # per minute, over the judged window
    half_slope: float = 0.0  # per minute, over its second half
    threshold: float = 0.0  # per minute
    grows: bool = False
    checked: bool = False  # a metric with thresholds (not only recorded)
    go_heap: bool = False  # grows, but a Go worker's under GO_CEILING_KIB

    def describe(self):
        unit = THRESHOLDS.get(self.metric, (0, 0, "KiB" if self.metric.endswith("_kib") else ""))[2]
        return (
            f"module {self.module} (pid {self.pid or '-'}): {self.metric} grows "
            f"{self.slope:+.1f} {unit}/min (second half {self.half_slope:+.1f}) over "
            f"{self.window_min:.1f} min after the warm-up, threshold {self.threshold:.1f} "
            f"{unit}/min; from {self.lo:g} to {self.hi:g} {unit}"
        )


@dataclass
class Report:
    duration_s: float
    warmup_s: float
    verdicts: list
    restarts: dict  # module -> ["at T s: pid A -> B", ...]
    failures: list
    warnings: list
    notes: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.failures


def load(path):
    """Rows of the CSV as (t, module, pid, metric, value); empty values
    are skipped. Values are numbers, except a language's."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["value"] == "":
                continue
            value = r["value"] if r["metric"] == "language" else float(r["value"])
            rows.append((float(r["time_s"]), r["module"], r["pid"], r["metric"], value))
    return rows


def judge(series, warmup_s, thresholds, go=False):
    pts = sorted(series.points)
    values = [v for _, v in pts]
    first, last = pts[0][0], pts[-1][0]
    v = Verdict(series.module, series.metric, series.pid, first, last, min(values), max(values), False)
    window = [(t, x) for t, x in pts if t >= first + warmup_s]
    if len(window) < MIN_POINTS or window[-1][0] - window[0][0] < MIN_WINDOW_S:
        return v
    t0, t1 = window[0][0], window[-1][0]
    v.judged = True
    v.window_min = (t1 - t0) / 60.0
    v.slope = slope_per_min(window) or 0.0
    second = [(t, x) for t, x in window if t >= (t0 + t1) / 2]
    v.half_slope = (slope_per_min(second) or 0.0) if len(second) >= 2 else v.slope
    if series.metric in thresholds:
        rate, floor, _ = thresholds[series.metric]
        v.checked = True
        v.threshold = max(rate, floor / v.window_min)
        v.grows = v.slope > v.threshold and v.half_slope > v.threshold
        if v.grows and go and series.metric in GO_CEILED and max(x for _, x in window) <= GO_CEILING_KIB:
            v.grows, v.go_heap = False, True
    return v


def analyze(rows, duration_s=None, warmup_s=None, allow_restarts=False, thresholds=THRESHOLDS):
    """rows: (t_s, module, pid, metric, value). Returns a Report."""
    rows = list(rows)
    if duration_s is None:
        duration_s = max((r[0] for r in rows), default=0.0)
    if warmup_s is None:
        warmup_s = default_warmup(duration_s)
    series = {}
    pids = defaultdict(list)  # module -> [(first t, pid)] in order
    restart_counts = defaultdict(list)  # module -> [(t, restarts)]
    go = {(module, pid) for _, module, pid, metric, value in rows if metric == "language" and value == "go"}
    for t, module, pid, metric, value in rows:
        if metric == "language":
            continue
        if metric == "restarts":
            restart_counts[module].append((t, value))
            continue
        key = (module, metric, pid)
        if key not in series:
            series[key] = Series(module, metric, pid)
        series[key].points.append((t, value))
        if pid and (not pids[module] or pids[module][-1][1] != pid):
            if all(p != pid for _, p in pids[module]):
                pids[module].append((t, pid))
    verdicts = [judge(s, warmup_s, thresholds, (s.module, s.pid) in go) for s in series.values()]
    verdicts.sort(key=lambda v: (v.module, v.first, v.metric))

    restarts = {}
    for module in sorted(set(pids) | set(restart_counts)):
        events = []
        seen = sorted(pids.get(module, []))
        for (_, old), (t, new) in zip(seen, seen[1:]):
            events.append(f"at {t:.0f} s: pid {old} -> {new}")
        counts = sorted(restart_counts.get(module, []))
        counted = int(counts[-1][1] - counts[0][1]) if counts else 0
        if counted > len(events):
            # Restarts between two samples, or a worker that is gone (backoff,
            # failed) show in the counter, not as a new pid.
            events.append(f"{counted - len(events)} more by its restart count ({int(counts[0][1])} -> {int(counts[-1][1])})")
        if events:
            restarts[module] = events

    failures, warnings, notes = [], [], []
    for v in verdicts:
        if v.grows:
            failures.append(v.describe())
        elif v.go_heap:
            notes.append(
                f"{v.describe()}: a Go heap before its first collection (below {GO_CEILING_KIB / 1024:g} MiB), not judged"
            )
    for module, events in restarts.items():
        line = f"module {module} restarted during the soak: {'; '.join(events)}"
        (warnings if allow_restarts else failures).append(line)
    judged = sum(v.judged and v.checked for v in verdicts)
    if rows and judged == 0:
        failures.append(
            f"nothing could be judged: no series has {MIN_POINTS} samples over {MIN_WINDOW_S:.0f} s "
            f"after the {warmup_s:.0f} s warm-up (a longer run, or a shorter --interval)"
        )
    if not rows:
        failures.append("no samples")
    return Report(duration_s, warmup_s, verdicts, restarts, failures, warnings, notes)


def fmt_kib(k):
    return f"{k / 1024:.2f} MiB" if k >= 1024 else f"{k:.0f} KiB"


def summary(report):
    """The table for people: per process its memory ranges and slopes, its
    fds and threads, then the verdict."""
    by = defaultdict(dict)
    for v in report.verdicts:
        by[(v.module, v.pid)][v.metric] = v
    lines = [
        f"soak: {report.duration_s / 60:.1f} min sampled, warm-up {report.warmup_s:.0f} s per worker",
        "memory: range over the worker's life (slope after the warm-up, KiB/min; * judged)",
        f"{'MODULE':<23} {'PID':>7}  {'USS':<28} {'PRIVATE DIRTY *':<28} {'CGROUP *':<28} "
        f"{'FDS':<7} {'THREADS':<7} {'INBOX':>5}",
    ]

    def mem(v):
        if v is None:
            return "-"
        s = f"{fmt_kib(v.lo)}..{fmt_kib(v.hi)}"
        return s + (f" ({v.slope:+.1f})" if v.judged else " (-)")

    def count(v):
        if v is None:
            return "-"
        return f"{v.lo:g}" if v.lo == v.hi else f"{v.lo:g}..{v.hi:g}"

    for (module, pid), m in sorted(by.items(), key=lambda kv: (kv[0][0].startswith("ring:"), kv[0])):
        if module.startswith("ring:"):
            continue
        inbox = m.get("inbox_depth")
        lines.append(
            f"{module:<23} {pid or '-':>7}  {mem(m.get('uss_kib')):<28} {mem(m.get('dirty_kib')):<28} "
            f"{mem(m.get('cgroup_kib')):<28} {count(m.get('fds')):<7} {count(m.get('threads')):<7} "
            f"{(f'{inbox.hi:g}' if inbox else '-'):>5}"
        )
    rings = [v for v in report.verdicts if v.module.startswith("ring:")]
    if rings:
        deepest = max(rings, key=lambda v: v.hi)
        lines.append(f"rings: {len(rings)}, deepest {deepest.module[5:]} at {deepest.hi:g} message(s)")
    for n in report.notes:
        lines.append(f"NOTE {n}")
    for w in report.warnings:
        lines.append(f"WARN {w}")
    for f in report.failures:
        lines.append(f"FAIL {f}")
    lines.append("soak: PASS" if report.ok else f"soak: FAIL ({len(report.failures)} problem(s))")
    return "\n".join(lines)


STYLES = {
    "uss_kib": dict(color="tab:blue", lw=1.0, label="USS"),
    "dirty_kib": dict(color="tab:green", lw=1.0, label="private dirty"),
    "cgroup_kib": dict(color="tab:orange", lw=0.8, ls="--", alpha=0.8, label="cgroup"),
}


def plot(rows, report, path):
    """USS, private dirty and cgroup memory of every process over time, one
    small panel each (its own scale); each worker's warm-up shaded,
    restarts as red lines, the judged private dirty slope in the title (red
    when it grows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mem = defaultdict(lambda: defaultdict(list))  # module -> (metric, pid) -> points
    for t, module, pid, metric, value in rows:
        if metric in STYLES:
            mem[module][(metric, pid)].append((t, value / 1024))
    modules = sorted(mem, key=lambda m: (m not in (SUPERVISOR, FORK_SERVER), m))
    if not modules:
        return
    cols = 6
    nrows = math.ceil(len(modules) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 1.75 * nrows + 0.7), squeeze=False)
    verdicts = {(v.module, v.pid, v.metric): v for v in report.verdicts}
    minutes = report.duration_s >= 600
    scale = 60 if minutes else 1
    for ax, module in zip(axes.flat, modules):
        first_seen = {}
        for (metric, pid), pts in sorted(mem[module].items(), key=lambda kv: list(STYLES).index(kv[0][0])):
            pts.sort()
            style = {k: v for k, v in STYLES[metric].items() if k != "label"}
            ax.plot([p[0] / scale for p in pts], [p[1] for p in pts], **style)
            first_seen[pid] = min(first_seen.get(pid, pts[0][0]), pts[0][0])
        pids = sorted((t, pid) for pid, t in first_seen.items())
        for start, _ in pids:
            end = min(start + report.warmup_s, report.duration_s)
            ax.axvspan(start / scale, end / scale, color="0.9", lw=0)
        for start, _ in pids[1:]:
            ax.axvline(start / scale, color="red", lw=1)
        judged = [verdicts.get((module, pid, m)) for _, pid in pids for m in ("dirty_kib", "cgroup_kib")]
        judged = [v for v in judged if v is not None and v.judged]
        dirty = [v for v in judged if v.metric == "dirty_kib"]
        title = module
        if dirty:
            title += f"  dirty {dirty[-1].slope:+.0f} KiB/min"
        if len(pids) > 1:
            title += f", {len(pids) - 1} restart(s)"
        colour = "red" if any(v.grows for v in judged) else "darkorange" if any(v.go_heap for v in judged) else "black"
        ax.set_title(title, fontsize=7, color=colour)
        ax.tick_params(labelsize=6)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], **style) for style in STYLES.values()]
    fig.legend(handles=handles, loc="upper right", ncol=3, fontsize=7, frameon=False)
    for ax in list(axes.flat)[len(modules):]:
        ax.axis("off")
    fig.suptitle(
        f"soak: memory per process (MiB) over {'minutes' if minutes else 'seconds'}, "
        f"{report.duration_s / 60:.0f} min, warm-up shaded, {'PASS' if report.ok else 'FAIL'}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=72)
    plt.close(fig)
    try:  # a palette of 64 colours: a third of the size, the same picture
        from PIL import Image  # matplotlib's own dependency

        with Image.open(path) as image:
            small = image.convert("RGB").quantize(colors=64)
        small.save(path, optimize=True)
    except ImportError:
        pass


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv")
    p.add_argument("--warmup", type=float, help="seconds (default: a quarter of the run, 30 s..10 min)")
    p.add_argument("--duration", type=float, help="seconds (default: the last sample's time)")
    p.add_argument("--allow-restarts", action="store_true", help="a restart is a warning, not a failure")
    p.add_argument("--plot", help="write the memory plot (PNG; needs matplotlib)")
    p.add_argument("--summary", help="also write the summary to this file")
    args = p.parse_args(argv)
    try:
        rows = load(args.csv)
    except (OSError, KeyError, ValueError) as e:
        print(f"soak: cannot read {args.csv}: {e}", file=sys.stderr)
        return 2
    report = analyze(rows, args.duration, args.warmup, args.allow_restarts)
    text = summary(report)
    print(text)
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    if args.plot:
        plot(rows, report, args.plot)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
