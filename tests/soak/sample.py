#!/usr/bin/env python3
"""The soak test's sampler (scripts/soak): every INTERVAL seconds until
DURATION has passed (or SIGTERM/SIGINT), one sample of every module's
worker, the supervisor and the fork server, appended to a CSV in long
format:

    time_s,module,pid,metric,value

time_s counts from the sampler's start. Per process (module = the module's
name, `[supervisor]` or `[fork-server]`):

    uss_kib     Private_Clean + Private_Dirty of /proc/PID/smaps_rollup
    dirty_kib   Private_Dirty of the same: the part of USS that a leak grows
                (memory written by this process alone). The clean part is
                mostly file pages (the binary, a module's compiled code)
                that become shared whenever another process maps the same
                file, and private again when it goes
    pss_kib     Pss of the same
    cgroup_kib  the process's memory cgroup usage (cgroup v1
                memory.usage_in_bytes, v2 memory.current); empty when it
                has none of its own (the supervisor on a v1 host sits in
                the host's cgroup: only a cgroup edgeward made is read)
    fds         entries of /proc/PID/fd
    threads     Threads: of /proc/PID/status

Per module, from `edgeward status --json`: restarts, inbox_depth (the
sum of the depths of the rings it subscribes to) and, once per worker,
language (its value is a word: `go`, `rust`, `c`; the verdict allows a Go
worker's heap its first collection). Per ring, as module
`ring:CHANNEL:FROM>TO` (pid empty): depth. A module without a worker at
that moment has no row that time (a restart in progress).

Only the standard library: it runs before the plot's venv exists.
"""

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time

SUPERVISOR = "[supervisor]"
FORK_SERVER = "[fork-server]"


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def smaps_rollup(pid):
    """(uss_kib, dirty_kib, pss_kib) or (None, None, None)."""
    text = read_text(f"/proc/{pid}/smaps_rollup")
    if text is None:
        return None, None, None
    fields = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            try:
                fields[parts[0][:-1]] = int(parts[1])
            except ValueError:
                pass
    if "Private_Clean" not in fields:
        return None, None, None
    dirty = fields.get("Private_Dirty", 0)
    return fields["Private_Clean"] + dirty, dirty, fields.get("Pss")


def threads(pid):
    text = read_text(f"/proc/{pid}/status")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return None


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cgroup_mounts():
    """(v1 memory hierarchy mount or None, v2 mount or None)."""
    v1 = v2 = None
    text = read_text("/proc/self/mountinfo") or ""
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, rest = right.partition(" ")
        mount_point = left.split()[4]
        options = rest.split()[-1] if rest.split() else ""
        if fstype == "cgroup" and "memory" in options.split(","):
            v1 = v1 or mount_point
        elif fstype == "cgroup2":
            v2 = v2 or mount_point
    return v1, v2


V1_MEMORY, V2_MOUNT = cgroup_mounts()


def cgroup_file(pid, own_only):
    """The memory usage file of pid's memory cgroup, or None. own_only:
    only a cgroup edgeward made (its path names edgeward)."""
    text = read_text(f"/proc/{pid}/cgroup")
    if text is None:
        return None
    v1_path = v2_path = None
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "" and path:
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    candidates = []
    if V1_MEMORY and v1_path is not None:
        candidates.append((v1_path, os.path.join(V1_MEMORY, v1_path.lstrip("/"), "memory.usage_in_bytes")))
    if V2_MOUNT and v2_path is not None:
        candidates.append((v2_path, os.path.join(V2_MOUNT, v2_path.lstrip("/"), "memory.current")))
    for path, file in candidates:
        if own_only and "edgeward" not in path:
            continue
        if os.path.exists(file):
            return file
    return None


def cgroup_kib(file):
    text = read_text(file) if file else None
    if text is None:
        return None
    try:
        return int(text.strip()) // 1024
    except ValueError:
        return None


def children(pid):
    """Direct children of pid (every thread's)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        text = read_text(f"/proc/{pid}/task/{task}/children") or ""
        out.extend(int(p) for p in text.split())
    return out


def comm(pid):
    return (read_text(f"/proc/{pid}/comm") or "").strip()


def status_json(edgeward, control):
    try:
        out = subprocess.run(
            [edgeward, "status", "--json", "--control", control],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
        return json.loads(out)
    except (subprocess.SubprocessError, json.JSONDecodeError, OSError) as e:
        print(f"soak: edgeward status failed: {e}", file=sys.stderr)
        return None


def process_rows(t, name, pid, own_cgroup_only):
    uss, dirty, pss = smaps_rollup(pid)
    if uss is None:  # gone between the status and now
        return []
    values = {
        "uss_kib": uss,
        "dirty_kib": dirty,
        "pss_kib": pss,
        "cgroup_kib": cgroup_kib(cgroup_file(pid, own_cgroup_only)),
        "fds": fds(pid),
        "threads": threads(pid),
    }
    return [(t, name, pid, metric, "" if v is None else v) for metric, v in values.items()]


LANGUAGE_SEEN = set()


def sample(t, edgeward, control, supervisor_pid):
    status = status_json(edgeward, control)
    if status is None:
        return []
    rows = []
    module_pids = set()
    inbox = {}
    for ring in status.get("rings", []):
        depth = ring.get("depth", 0)
        inbox[ring["to"]] = inbox.get(ring["to"], 0) + depth
        rows.append((t, f"ring:{ring['channel']}:{ring['from']}>{ring['to']}", "", "depth", depth))
    for m in status.get("modules", []):
        for key in ("pid", "spare_pid"):
            if m.get(key):
                module_pids.add(m[key])
        pid = m.get("pid")
        rows.append((t, m["name"], pid or "", "restarts", m.get("restarts", 0)))
        if pid:
            rows.extend(process_rows(t, m["name"], pid, own_cgroup_only=False))
            rows.append((t, m["name"], pid, "inbox_depth", inbox.get(m["name"], 0)))
            if m.get("language") and (m["name"], pid) not in LANGUAGE_SEEN:
                LANGUAGE_SEEN.add((m["name"], pid))
                rows.append((t, m["name"], pid, "language", m["language"]))
    if supervisor_pid:
        rows.extend(process_rows(t, SUPERVISOR, supervisor_pid, own_cgroup_only=True))
        # The fork server: the supervisor's child that is no module's worker
        # or spare and not named ew:MODULE (workers and connectors are).
        for child in children(supervisor_pid):
            if child not in module_pids and not comm(child).startswith("ew:"):
                rows.extend(process_rows(t, FORK_SERVER, child, own_cgroup_only=True))
                break
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--edgeward", required=True, help="the edgeward binary")
    p.add_argument("--control", required=True, help="its control socket")
    p.add_argument("--supervisor-pid", type=int, default=0)
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--interval", type=float, required=True, help="seconds")
    p.add_argument("--csv", required=True)
    args = p.parse_args()

    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    start = time.monotonic()
    n = 0
    with open(args.csv, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["time_s", "module", "pid", "metric", "value"])
        while not stop:
            now = time.monotonic() - start
            if now > args.duration:
                break
            if args.supervisor_pid and not os.path.exists(f"/proc/{args.supervisor_pid}"):
                print("soak: edgeward ended during the soak", file=sys.stderr)
                return 1
            out.writerows(sample(round(now, 2), args.edgeward, args.control, args.supervisor_pid))
            f.flush()
            n += 1
            if n % max(1, int(60 / args.interval)) == 0:
                print(f"soak: {now / 60:.1f} of {args.duration / 60:.1f} min sampled", file=sys.stderr)
            # The next sample on the grid, however long this one took.
            n_next = int((time.monotonic() - start) / args.interval) + 1
            delay = start + n_next * args.interval - time.monotonic()
            end = start + args.duration - time.monotonic()
            deadline = min(delay, max(end, 0) + 0.001)
            while deadline > 0 and not stop:
                time.sleep(min(deadline, 0.2))
                deadline -= 0.2
    return 0


if __name__ == "__main__":
    sys.exit(main())
