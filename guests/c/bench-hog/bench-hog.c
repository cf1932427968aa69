/* The bench's CPU hog (scripts/bench gateway, hog_isolation; and the
 * overrunning module of tests/tests/tick_lateness.rs): each tick
 * spins for `--spin-ms` (default 10), so with a 1 ms tick it wants a whole
 * core and only its cgroup quota ([resources] cpu_percent) holds it back.
 * The quota throttles it in the middle of a call for the rest of the
 * 100 ms period, and the call budget counts wall time: its policy needs a
 * call_budget_ms well over 100 ms. */
#include "edgeward.h"

static int64_t spin_ns;
static volatile uint64_t sink;

EW_INIT() {
    spin_ns = (int64_t)(ew_arg_f64("--spin-ms", 10) * 1e6);
    return 0;
}

EW_ON_TICK(now_ns) {
    int64_t until = ew_now_ns() + spin_ns;
    (void)now_ns;
    while (ew_now_ns() < until)
        for (int i = 0; i < 1000; i++)
            sink += (uint64_t)i;
    return 0;
}
