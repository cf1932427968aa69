# The aarch64 VM smoke test (Debian 12's 6.1 arm64 kernel on QEMU's virt
# machine), run by init as `edgeward.vm=aarch64`: the worker's self-test
# names every denied syscall (the aarch64 allowlist and SIGSYS report);
# a gateway of a counter and a trapping module runs: the counter ticks and
# is jailed, the trap is reported with its place, a killed worker comes
# back from its snapshot, SIGTERM stops it all with exit 0.
. /ew/vm/lib.sh

section "kernel"
say "cgroup: $(cat /proc/self/cgroup), root controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"

section "edgeward-worker self-test and probe"
worker_tools

section "gateway: counter and trap"
start_gateway /ew/vm/policies/smoke
started=$(now_ms)
if ! wait_until 180 "counter running" all_running counter; then
    dump_log
    exit 1
fi
say "counter running $(($(now_ms) - started)) ms after the start"
grep -F 'sandbox:' "$LOG" | sed 's/^/vm:   /'
if wait_until 60 "counter ticks logged" in_log "[counter] info: ticks="; then
    ok "log: $(grep -F '[counter] info: ticks=' "$LOG" | tail -n 1)"
fi
UIDS_SEEN=
jailed counter "$(field counter pid)"
case $(cat "/proc/$(field counter pid)/cgroup") in
0::/*/edgeward-*/counter) ok "counter: cgroup $(cat "/proc/$(field counter pid)/cgroup")" ;;
*) fail "counter: not in a module cgroup of its own: $(cat "/proc/$(field counter pid)/cgroup")" ;;
esac

section "a trap is reported with its place"
if wait_until 60 "trap failed" state_is trap failed; then
    error=$(field trap last_error)
    case $error in
    "trap: unreachable in trap::on_tick_fails"*) ok "trap: last_error $error" ;;
    *) fail "trap: last_error '$error' (expected 'trap: unreachable in trap::on_tick_fails …')" ;;
    esac
    check "trap: restarts" "$(field trap restarts)" 2
fi

section "a killed worker comes back with its last acknowledged snapshot"
counter_survives_a_kill

section "SIGTERM stops everything"
stop_gateway
check "edgeward run exit status" "$?" 0

dump_log
verdict
