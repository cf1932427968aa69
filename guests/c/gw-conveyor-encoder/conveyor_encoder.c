/* gw-conveyor-encoder: the outfeed conveyor's incremental encoder (1024
 * pulses a turn on a 0.2 m roller), simulated. Every tick (50 ms) it
 * counts the pulses since the last tick and publishes the belt speed they
 * give, quantised as a real encoder's is, as a reading (n: u64, m_per_s:
 * f64, t_ns: i64) on conveyor-speed, for gw-part-counter and gw-oee.
 *
 * Deterministic, as a function of the reading number n: about 0.47 m/s
 * (a little below the 0.5 m/s the line is rated for) with a slow 2 %
 * swing, and a product changeover every 2400 readings (2 minutes), 200
 * readings long (10 s, from reading 1800 on), when the belt stands still.
 *
 * n and the pulse total survive restarts through a snapshot. */
#include <math.h>

#include "edgeward.h"

#define PULSES_PER_TURN 1024.0
#define ROLLER_M 0.2
#define PERIOD_S 0.05

struct reading {
    uint64_t n;
    double value;
    int64_t t_ns;
};

static int32_t out;
static struct {
    uint64_t n;
    uint64_t pulses;  /* since the first start */
    double fraction;  /* of a pulse, carried to the next tick */
} state;

static double belt_speed(uint64_t n) {
    uint64_t k = n % 2400;
    if (k >= 1800 && k < 2000)
        return 0; /* changeover */
    return 0.47 * (1 + 0.02 * sin(2 * M_PI * (double)n / 600));
}

EW_INIT() {
    out = ew_channel("conveyor-speed");
    return out < 0 ? out : 0;
}

EW_ON_TICK(now_ns) {
    double exact = belt_speed(state.n) * PERIOD_S / ROLLER_M * PULSES_PER_TURN + state.fraction;
    uint64_t pulses = (uint64_t)exact;
    state.fraction = exact - (double)pulses;
    state.pulses += pulses;
    struct reading r = {state.n, (double)pulses / PULSES_PER_TURN * ROLLER_M / PERIOD_S, now_ns};
    state.n++;
    int32_t sent = ew_send(out, &r, sizeof r);
    return sent < 0 ? sent : 0;
}

EW_SNAPSHOT() { return ew_snapshot_put(&state, sizeof state); }

EW_RESTORE(saved, len) {
    if (len != sizeof state)
        return -1;
    memcpy(&state, saved, sizeof state);
    ew_logf(EW_INFO, "resuming at reading %llu, %llu pulses", (unsigned long long)state.n,
            (unsigned long long)state.pulses);
    return 0;
}
