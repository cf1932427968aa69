# The start-up bench inside the x86_64 v2 VM (`scripts/test-vm --bench`),
# run by init as `edgeward.vm=bench`: `start32` as `scripts/bench start`
# measures it on the host (tests/src/bin/bench.rs), beside its baseline in
# the same VM, so that the ratio, not the emulated milliseconds, is what
# counts:
# - edgeward: 32 policies of the counter guest (`memory_mib = 16`), fork-
#   server workers; from just before `edgeward run` is spawned to its
#   `all 32 module(s) ready` line. One start first fills the compile cache.
# - baseline: 32 `wasmtime run --allow-precompiled` of the idle Rust
#   command (precompiled by `wasmtime compile`), started together; until
#   each printed `ready`. One round first fills the page cache.
# Prints `EDGEWARD-VM-BENCH: NAME VALUE...` lines that scripts/test-vm
# turns into figures. Times come from /proc/uptime (10 ms steps).
. /ew/vm/lib.sh

MODULES=32
RUNS=${RUNS:-5}
POLICIES=$GW/bench-policies
mkdir -p "$POLICIES" /tmp/bench
i=0
while [ $i -lt $MODULES ]; do
    printf '[module]\nwasm = "%s/counter.wasm"\n[resources]\nmemory_mib = 16\n' "$GUESTS" \
        >"$POLICIES/m$(printf %02d $i).toml"
    i=$((i + 1))
done

# edgeward_start: one timed start; its milliseconds in $TOOK, edgeward's
# own "ready in" figure in $OWN.
edgeward_start() {
    rm -f /tmp/bench/ready /tmp/bench/fifo
    mkfifo /tmp/bench/fifo
    # Its stderr, line by line: the time the ready line arrives.
    while IFS= read -r line; do
        echo "$line" >>"$LOG"
        case $line in
        *"all $MODULES module(s) ready"*) now_ms >/tmp/bench/ready ;;
        esac
    done </tmp/bench/fifo &
    reader=$!
    t0=$(now_ms)
    EDGEWARD_PROCESS_MODEL=zygote "$EW" run --policies "$POLICIES" --state "$GW/state" \
        --control "$CTL" </dev/null >/dev/null 2>/tmp/bench/fifo &
    EW_PID=$!
    until [ -s /tmp/bench/ready ]; do
        if [ $(($(now_ms) - t0)) -gt 300000 ] || ! [ -d /proc/$EW_PID ]; then
            fail "edgeward did not report all $MODULES modules ready (within 300 s)"
            dump_log
            exit 1
        fi
        sleep 0.01
    done
    TOOK=$(($(cat /tmp/bench/ready) - t0))
    OWN=$(grep -F "all $MODULES module(s) ready in" "$LOG" | tail -n 1 | sed 's/.*ready in //; s/ ms.*//')
    stop_gateway || fail "edgeward run exited with status $? after SIGTERM"
    wait $reader
}

# wasmtime_start: one timed round of 32 `wasmtime run`; $TOOK as above.
wasmtime_start() {
    rm -rf /tmp/bench/wt
    mkdir -p /tmp/bench/wt
    t0=$(now_ms)
    i=0
    while [ $i -lt $MODULES ]; do
        wasmtime run --allow-precompiled /tmp/bench/idle.cwasm </dev/null 2>/dev/null |
            { read -r line && [ "$line" = ready ] && now_ms >/tmp/bench/wt/$i; cat >/dev/null; } &
        i=$((i + 1))
    done
    until [ "$(ls /tmp/bench/wt | wc -l)" -ge $MODULES ] && [ -z "$(find /tmp/bench/wt -size 0)" ]; do
        if [ $(($(now_ms) - t0)) -gt 300000 ]; then
            fail "32 wasmtime run did not all print ready within 300 s"
            exit 1
        fi
        sleep 0.01
    done
    TOOK=$(($(cat /tmp/bench/wt/* | sort -n | tail -n 1) - t0))
    kill $(pidof wasmtime)
    wait
}

section "edgeward: 32 x counter, fork-server workers"
edgeward_start
say "warm-up start (fills the compile cache): $TOOK ms (edgeward's own: $OWN ms)"
if in_log 'clone3(CLONE_INTO_CGROUP)'; then CLONE3=yes; else CLONE3=no; fi
say "workers placed with clone3(CLONE_INTO_CGROUP): $CLONE3"
grep -F 'sandbox:' "$LOG" | head -n 1 | sed 's/^/vm:   /'
edgeward=
own=
run=1
while [ $run -le "$RUNS" ]; do
    edgeward_start
    say "start32 run $run: $TOOK ms (edgeward's own: $OWN ms)"
    edgeward="$edgeward $TOOK"
    own="$own $OWN"
    run=$((run + 1))
done

section "baseline: 32 wasmtime run of the precompiled idle command"
wasmtime --version | sed 's/^/vm:   /'
wasmtime compile "$GUESTS/idle_command.wasm" -o /tmp/bench/idle.cwasm || fail "wasmtime compile failed"
wasmtime_start
say "warm-up round: $TOOK ms"
wasmtime=
run=1
while [ $run -le "$RUNS" ]; do
    wasmtime_start
    say "wasmtime run x32 run $run: $TOOK ms"
    wasmtime="$wasmtime $TOOK"
    run=$((run + 1))
done

echo "EDGEWARD-VM-BENCH: start32_ms$edgeward"
echo "EDGEWARD-VM-BENCH: start32_own_ms$own"
echo "EDGEWARD-VM-BENCH: wasmtime_run_start32_ms$wasmtime"
echo "EDGEWARD-VM-BENCH: clone3 $CLONE3"
verdict
