# The x86_64 VM test (Debian 12's 6.1 kernel, pure cgroup v2, Landlock ABI
# 2), run by init as `edgeward.vm=x86_64`. A gateway of four modules:
# counter (snapshots), steady (a bystander), busy (spins under a 20% CPU
# quota) and bomb (grows until the OOM killer acts). Checks, as
# tests/tests/sandbox.rs and snapshots.rs do on the host: every worker is
# jailed; each module has its own v2 cgroup with the policy's limits; the
# OOM kill is reported with its limit and touches no other module; the CPU
# quota holds; the Landlock ABI 2 gaps are reported as degraded; workers
# are placed with clone3(CLONE_INTO_CGROUP); a killed worker comes back
# from its snapshot; SIGTERM stops it all with exit 0.
. /ew/vm/lib.sh

section "kernel and cgroups"
say "cgroup: $(cat /proc/self/cgroup), root controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
if [ "$(wc -l </proc/self/cgroup)" = 1 ] && grep -q '^0::' /proc/self/cgroup; then
    ok "pure cgroup v2 (no v1 hierarchy)"
else
    fail "not a pure cgroup v2 host: $(cat /proc/self/cgroup)"
fi
for c in cpu memory pids; do
    grep -qw $c /sys/fs/cgroup/cgroup.subtree_control || fail "controller $c not enabled at the root"
done

section "edgeward-worker self-test and probe"
worker_tools
case $PROBE in
*'"landlock_abi":2,'*) ok "probe: Landlock ABI 2 (Linux 6.1)" ;;
*) say "note: probe reports a Landlock ABI other than 2: $PROBE" ;;
esac
"$EW" check --sandbox >/tmp/check-sandbox.out 2>&1
say "edgeward check --sandbox (exit $?):"
sed 's/^/vm:   /' /tmp/check-sandbox.out

section "gateway of four modules"
POLICIES=/ew/vm/policies/gateway
MODULES="counter steady busy bomb"
start_gateway "$POLICIES"
started=$(now_ms)
if ! wait_until 180 "modules $MODULES running" all_running $MODULES; then
    dump_log
    exit 1
fi
say "all running $(($(now_ms) - started)) ms after the start; $(grep -F 'module(s) ready in' "$LOG" | head -n 1)"
cp /tmp/status.json /tmp/status-before.json
grep -F 'sandbox:' "$LOG" | sed 's/^/vm:   /'

section "every worker is jailed, in its own v2 cgroup with its limits"
UIDS_SEEN=
for spec in counter:16:10:11 steady:24:15:11 busy:16:20:7 bomb:128:25:11; do
    IFS=: read -r name mem cpu pids <<EOF
$spec
EOF
    pid=$(field $name pid /tmp/status-before.json)
    say "$name: worker pid $pid"
    jailed $name "$pid"
    cg=$(cgroup_of "$pid")
    case $(cat "/proc/$pid/cgroup") in
    0::/*/edgeward-*/$name) ok "$name: cgroup $(cat "/proc/$pid/cgroup")" ;;
    *) fail "$name: /proc/$pid/cgroup is '$(cat "/proc/$pid/cgroup")', expected 0::/…/edgeward-<id>/$name" ;;
    esac
    check "$name: memory.max" "$(cat "$cg/memory.max")" $(((mem + 8) * 1048576))
    check "$name: cpu.max" "$(cat "$cg/cpu.max")" "$((cpu * 1000)) 100000"
    check "$name: pids.max" "$(cat "$cg/pids.max")" "$pids"
done
# The fork server is hardened too.
workers=" $(for m in $MODULES; do field $m pid /tmp/status-before.json; done | tr '\n' ' ')"
zygote=
for child in $(children_of "$EW_PID"); do
    case $workers in *" $child "*) ;; *) zygote=$child ;; esac
done
if [ -n "$zygote" ]; then
    check "fork server (pid $zygote): NoNewPrivs" "$(proc_field "$zygote" NoNewPrivs)" 1
    check "fork server: Seccomp" "$(proc_field "$zygote" Seccomp)" 2
else
    fail "no fork server among the supervisor's children ($(children_of "$EW_PID" | tr '\n' ' '))"
fi

section "workers placed with clone3(CLONE_INTO_CGROUP)"
if in_log 'clone3(CLONE_INTO_CGROUP)'; then
    ok "log: $(grep -F 'clone3(CLONE_INTO_CGROUP)' "$LOG" | head -n 1)"
else
    fail "the log never says workers were placed with clone3(CLONE_INTO_CGROUP) (6.1 has it; v2 needs no migration)"
fi

section "Landlock ABI 2: the missing features are reported as degraded"
for name in $MODULES; do
    degraded=$(field $name degraded /tmp/status-before.json)
    case $degraded in
    *landlock*) ok "$name: degraded $degraded" ;;
    *) fail "$name: status shows no degraded landlock layer on ABI 2 (degraded: [$degraded])" ;;
    esac
done
if in_log 'sandbox layer missing: landlock'; then
    ok "log: $(grep -F 'sandbox layer missing: landlock' "$LOG" | head -n 1)"
else
    fail "the log has no 'sandbox layer missing: landlock' warning"
fi

section "a cgroup OOM kill is reported with its limit and touches no other module"
bomb_cg=$(cgroup_of "$(field bomb pid /tmp/status-before.json)")
# The wasm limit (128 MiB) would stop the bomb much later: lowering the
# cgroup limit under its use makes the kernel's OOM killer act.
echo $((24 * 1048576)) >"$bomb_cg/memory.max"
say "bomb: memory.max lowered to 24 MiB ($bomb_cg)"
if wait_until 60 "bomb failed" state_is bomb failed; then
    check "bomb: last_error" "$(field bomb last_error)" "out of memory: cgroup limit 24 MiB"
    say "bomb: memory.events: $(tr '\n' ' ' <"$bomb_cg/memory.events" 2>/dev/null)"
fi

section "the CPU quota holds for a spinning module"
busy_cg=$(cgroup_of "$(field busy pid /tmp/status-before.json)")
read_cpu() { awk '$1 == "usage_usec" { u = $2 } $1 == "nr_throttled" { t = $2 } END { print u, t }' "$busy_cg/cpu.stat"; }
set -- $(read_cpu)
u0=$1 t0=$2 w0=$(now_ms)
sleep 4
set -- $(read_cpu)
u1=$1 t1=$2 w1=$(now_ms)
used=$(((u1 - u0) / 10 / (w1 - w0)))
say "busy: $(((u1 - u0) / 1000)) ms of CPU in $((w1 - w0)) ms = $used%, throttled $((t1 - t0)) times (quota 20%)"
# A period's quota can be overrun by the last slice before the throttle
# acts: 25% is the bound, the throttle count shows the quota acted.
if [ "$used" -le 25 ]; then ok "busy: $used% <= 25% (quota 20%)"; else fail "busy used $used% of a core under a 20% quota"; fi
if [ "$used" -ge 10 ]; then ok "busy: spins ($used%)"; else fail "busy used only $used% of a core: it did not spin, the quota was not tested"; fi
if [ $((t1 - t0)) -gt 0 ]; then ok "busy: throttled $((t1 - t0)) times"; else fail "busy was never throttled"; fi

section "a killed worker comes back with its last acknowledged snapshot"
counter_survives_a_kill

section "the bystanders kept their workers"
status
for name in steady busy; do
    check "$name: pid" "$(field $name pid)" "$(field $name pid /tmp/status-before.json)"
    check "$name: restarts" "$(field $name restarts)" 0
    check "$name: state" "$(field $name state)" running
done

section "SIGTERM stops everything"
stop_gateway
code=$?
check "edgeward run exit status" "$code" 0
in_log "all modules stopped" && ok "log: all modules stopped" || fail "the log does not say all modules stopped"
# The supervisor's leaf (edgeward-supervisor) holds this driver too: the
# supervisor moved its cgroup's processes there. Only module cgroups count.
left=$(find /sys/fs/cgroup -name cgroup.procs -path '*edgeward-*' ! -path '*/edgeward-supervisor/*' -exec cat {} + 2>/dev/null | wc -l)
check "processes left in module cgroups" "$left" 0

dump_log
verdict
