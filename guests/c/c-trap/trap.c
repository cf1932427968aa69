/* Fault injection in C: traps (`__builtin_trap`, wasm `unreachable`) in a
 * function of its own on the tick after `--after` ticks (default 3), so a
 * test can check that the report names the C function. */
#include "edgeward.h"

static double after;
static int ticks;

__attribute__((noinline)) static void check_valve_position(void) { __builtin_trap(); }

EW_INIT() {
    after = ew_arg_f64("--after", 3);
    return 0;
}

EW_ON_TICK(now_ns) {
    (void)now_ns;
    if (++ticks > after)
        check_valve_position();
    return 0;
}
