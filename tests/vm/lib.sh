# Shared by the guest drivers (busybox sh, sourced): where things are, how a
# check passes or fails, waiting, and reading `edgeward status --json` and
# /proc without jq. A failed check is recorded in /tmp/failures (init names
# the first in its result line) and the driver goes on where it can.

EW=/ew/bin/edgeward
WORKER=/ew/bin/edgeward-worker
GUESTS=/ew/guests
GW=/tmp/gw
CTL=$GW/control.sock
LOG=$GW/log
: >/tmp/failures

say() { echo "vm: $*"; }
section() { echo "vm: --- $* (at $(cut -d' ' -f1 /proc/uptime) s)"; }
ok() { echo "vm: ok   $*"; }
fail() {
    echo "vm: FAIL $*"
    echo "$*" >>/tmp/failures
    return 1
}
# check WHAT ACTUAL EXPECTED: equal, or a failure naming both.
check() {
    if [ "$2" = "$3" ]; then ok "$1 = $2"; else fail "$1 is '$2', expected '$3'"; fi
}
failed() { [ -s /tmp/failures ]; }
# The driver's exit status: 0 when no check failed.
verdict() {
    if failed; then
        say "$(wc -l </tmp/failures) check(s) failed"
        return 1
    fi
    say "all checks passed"
}

# Milliseconds since boot (10 ms resolution: busybox date has no %N).
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 0.1 s until it
# succeeds; a failure naming WHAT after SECONDS.
wait_until() {
    _limit=$1 _what=$2
    shift 2
    _end=$(($(now_ms) + _limit * 1000))
    until "$@" >/dev/null 2>&1; do
        if [ "$(now_ms)" -ge "$_end" ]; then
            fail "timed out after $_limit s waiting for: $_what"
            return 1
        fi
        sleep 0.1
    done
}

# start_gateway POLICY_DIR [ENV=VALUE...]: `edgeward run` on it in the
# background, state and control socket in $GW, its output in $LOG.
start_gateway() {
    _policies=$1
    shift
    mkdir -p "$GW"
    env "$@" "$EW" run --policies "$_policies" --state "$GW/state" --control "$CTL" \
        </dev/null >>"$LOG" 2>&1 &
    EW_PID=$!
    say "edgeward run (pid $EW_PID) on $_policies"
}

# stop_gateway: SIGTERM, then its exit status (or a failure after 30 s).
stop_gateway() {
    kill -TERM "$EW_PID" 2>/dev/null
    _end=$(($(now_ms) + 30000))
    while [ -d "/proc/$EW_PID" ] && ! grep -q '^State:.*Z' "/proc/$EW_PID/status" 2>/dev/null; do
        if [ "$(now_ms)" -ge "$_end" ]; then
            fail "edgeward did not exit within 30 s of SIGTERM"
            kill -KILL "$EW_PID"
            break
        fi
        sleep 0.1
    done
    wait "$EW_PID"
}

# status: `edgeward status --json` into /tmp/status.json (one line).
status() { "$EW" status --json --control "$CTL" >/tmp/status.json 2>/dev/null; }

# field MODULE KEY [FILE]: a module's value in a status report (default: the
# last one read): strings without quotes, arrays as their inside, null as null.
field() {
    awk -v m="$1" -v k="$2" '{
        i = index($0, "{\"name\":\"" m "\""); if (!i) exit 1
        s = substr($0, i + 1); j = index(s, "{\"name\":\""); if (j) s = substr(s, 1, j - 1)
        i = index(s, "\"" k "\":"); if (!i) exit 1
        v = substr(s, i + length(k) + 3)
        if (substr(v, 1, 1) == "\"") { v = substr(v, 2); print substr(v, 1, index(v, "\"") - 1) }
        else if (substr(v, 1, 1) == "[") print substr(v, 2, index(v, "]") - 2)
        else { match(v, /^[^,}]*/); print substr(v, 1, RLENGTH) }
    }' "${3:-/tmp/status.json}"
}

# state_is MODULE STATE: a fresh status shows MODULE in STATE.
state_is() { status && [ "$(field "$1" state)" = "$2" ]; }
# all_running MODULE...: a fresh status shows each of them running.
all_running() {
    status || return 1
    for _m in "$@"; do [ "$(field "$_m" state)" = running ] || return 1; done
}
# epoch_at_least MODULE N: its acknowledged snapshot epoch is N or more.
epoch_at_least() {
    status || return 1
    _e=$(field "$1" snapshot_epoch)
    [ "$_e" != null ] && [ "$_e" -ge "$2" ]
}
in_log() { grep -qF -- "$1" "$LOG"; }
# last_number_after NEEDLE: the number right after NEEDLE's last occurrence in the log.
last_number_after() {
    grep -F -- "$1" "$LOG" | tail -n 1 | awk -v n="$1" '{ s = substr($0, index($0, n) + length(n)); match(s, /^[0-9]+/); print substr(s, 1, RLENGTH) }'
}

# proc_field PID FIELD: a /proc/PID/status field, whitespace squeezed.
proc_field() { awk -v f="$2:" '$1 == f { $1 = ""; sub(/^ /, ""); print; exit }' "/proc/$1/status"; }
# children_of PID: live (not zombie) children of PID, from /proc/*/stat.
children_of() {
    for _s in /proc/[0-9]*/stat; do
        # After the parenthesised command: state, ppid.
        sed 's/.*) //' "$_s" 2>/dev/null | awk -v p="$1" -v f="$_s" '$1 != "Z" && $2 == p { split(f, a, "/"); print a[3] }'
    done
}
# cgroup_of PID: the directory of PID's v2 cgroup (one `0::PATH` line).
cgroup_of() { echo "/sys/fs/cgroup$(sed -n 's/^0:://p' "/proc/$1/cgroup")"; }

# jailed NAME PID: the worker runs as its own non-root uid, without
# capabilities, with no_new_privs and a seccomp filter, in a network
# namespace of its own (as tests/tests/sandbox.rs reads them on the host).
# Appends its uid to $UIDS_SEEN; a uid already there is a failure.
jailed() {
    _n=$1 _p=$2
    check "$_n: Seccomp" "$(proc_field "$_p" Seccomp)" 2
    check "$_n: NoNewPrivs" "$(proc_field "$_p" NoNewPrivs)" 1
    for _cap in CapEff CapPrm CapBnd; do
        check "$_n: $_cap" "$(proc_field "$_p" $_cap)" 0000000000000000
    done
    _uid=$(proc_field "$_p" Uid)
    _gid=$(proc_field "$_p" Gid)
    set -- $_uid
    if [ "$1" != 0 ] && [ "$1" = "$2" ] && [ "$1" = "$3" ] && [ "$1" = "$4" ]; then
        ok "$_n: uid $1 (real, effective, saved, fs)"
    else
        fail "$_n: uids '$_uid' (expected one non-root uid)"
    fi
    case " $UIDS_SEEN " in
    *" $1 "*) fail "$_n: shares uid $1 with another module" ;;
    esac
    UIDS_SEEN="$UIDS_SEEN $1"
    set -- $_gid
    if [ "$1" != 0 ] && [ "$1" = "$2" ] && [ "$1" = "$3" ] && [ "$1" = "$4" ]; then ok "$_n: gid $1"; else fail "$_n: gids '$_gid'"; fi
    if [ "$(readlink "/proc/$_p/ns/net")" != "$(readlink "/proc/$EW_PID/ns/net")" ]; then
        ok "$_n: network namespace of its own"
    else
        fail "$_n: shares the supervisor's network namespace"
    fi
}

# worker_tools: `edgeward-worker self-test` and `probe` report success;
# every forbidden call is denied and named (`seccomp: denied syscall NAME`).
worker_tools() {
    if "$WORKER" self-test >/tmp/self-test.out 2>/tmp/self-test.err; then
        ok "edgeward-worker self-test exits 0 ($(wc -l </tmp/self-test.out) checks)"
    else
        fail "edgeward-worker self-test failed: $(grep -v '"ok":true' /tmp/self-test.out | head -n 3) $(tail -n 3 /tmp/self-test.err)"
    fi
    _bad=$(grep -vc '"ok":true' /tmp/self-test.out)
    check "self-test checks not ok" "$_bad" 0
    for _call in socket connect execve ptrace mount bpf io_uring_setup userfaultfd; do
        if grep -qF "{\"check\":\"$_call\",\"ok\":true,\"detail\":\"seccomp: denied syscall $_call" /tmp/self-test.out; then
            ok "self-test: $_call denied and named"
        else
            fail "self-test: $_call not reported as 'seccomp: denied syscall $_call': $(grep -F "\"check\":\"$_call\"" /tmp/self-test.out)"
        fi
    done
    PROBE=$("$WORKER" probe 2>&1)
    say "edgeward-worker probe: $PROBE"
    case $PROBE in
    *'"seccomp":true'*'"namespaces":true'*) ok "probe: seccomp and namespaces available" ;;
    *) fail "probe: $PROBE (expected seccomp and namespaces true)" ;;
    esac
}

# counter_survives_a_kill: once the counter module has acknowledged
# snapshot epoch 3, SIGKILL its worker; the new worker must restore an
# epoch at least that one, with a count above zero.
counter_survives_a_kill() {
    wait_until 60 "counter snapshot epoch >= 3" epoch_at_least counter 3 || return 0
    _old=$(field counter pid)
    _acked=$(field counter snapshot_epoch)
    kill -KILL "$_old"
    say "counter: worker $_old killed at acknowledged epoch $_acked"
    # The guest logs its count, then the epoch: wait for the later line.
    wait_until 60 "counter restored its snapshot" in_log "restored snapshot epoch " || return 0
    _epoch=$(last_number_after "restored snapshot epoch ")
    _ticks=$(last_number_after "restored ticks=")
    if [ -n "$_epoch" ] && [ "$_epoch" -ge "$_acked" ]; then ok "counter: restored epoch $_epoch >= acknowledged $_acked"; else fail "counter: restored epoch '$_epoch' < acknowledged $_acked"; fi
    if [ -n "$_ticks" ] && [ "$_ticks" -gt 0 ]; then ok "counter: restored ticks=$_ticks"; else fail "counter: restored ticks '$_ticks'"; fi
    wait_until 30 "counter running again" state_is counter running || return 0
    if [ "$(field counter pid)" != "$_old" ]; then ok "counter: new worker $(field counter pid)"; else fail "counter: same pid after the kill"; fi
}

# dump_log: the gateway's log tail and the kernel's recent messages, for a
# failed run.
dump_log() {
    failed || return 0
    say "--- edgeward log (last 60 lines)"
    tail -n 60 "$LOG"
    say "--- dmesg (last 20 lines)"
    dmesg | tail -n 20
}
