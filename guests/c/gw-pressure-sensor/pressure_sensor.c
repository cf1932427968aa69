/* gw-pressure-sensor: the discharge pressure transmitter of the line's
 * pump, with the pump and its pipework simulated. Every tick (20 ms) it
 * publishes one reading (n: u64, bar: f64, t_ns: i64) on pressure-raw.
 * The pump answers the speed gw-pressure-pid publishes on pump-cmd (n,
 * speed %, t_ns): the pressure settles at 0.06 bar per % of speed divided
 * by the leak factor, with a 0.8 s time constant. So the 1 ms pressure
 * loop really closes through this module.
 *
 * Deterministic, as a function of the reading number n:
 *   - a little noise (0.02 bar);
 *   - a one-reading spike of +2.5 bar every 250 readings (5 s: water
 *     hammer), which gw-pressure-filter rejects;
 *   - a leak every 3000 readings (60 s), 250 readings long (5 s, from
 *     reading 2000 on): the leak factor goes from 1.0 to 2.2, the pump
 *     cannot hold the setpoint even at full speed, and gw-pressure-alarm
 *     raises "pressure-low".
 *
 * n survives restarts through a snapshot. */
#include <math.h>

#include "edgeward.h"

#define BAR_PER_SPEED 0.06
#define TAU_S 0.8

struct reading {
    uint64_t n;
    double value;
    int64_t t_ns;
};

static int32_t out, pump;
static uint64_t n;
static double speed; /* the last pump speed asked for, % */
static double bar;   /* the simulated pressure */
static int64_t last_ns;

/* A deterministic value in [-1, 1) for reading n (splitmix64). */
static double noise(uint64_t x) {
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0 * 2 - 1;
}

static double leak_factor(uint64_t k) {
    k %= 3000;
    return k >= 2000 && k < 2250 ? 2.2 : 1.0;
}

EW_INIT() {
    out = ew_channel("pressure-raw");
    pump = ew_channel("pump-cmd");
    return out < 0 ? out : pump < 0 ? pump : 0;
}

EW_ON_MESSAGE(channel, message, len) {
    double asked;
    if (channel == pump && ew_read_f64(message, len, 8, &asked) && asked >= 0 && asked <= 100)
        speed = asked;
    return 0;
}

EW_ON_TICK(now_ns) {
    /* Real time drives the physics (a late tick simulates the whole gap),
     * capped so that a long pause does not jump. */
    double dt = last_ns ? (double)(now_ns - last_ns) / 1e9 : 0.02;
    last_ns = now_ns;
    if (dt > 0.5)
        dt = 0.5;
    double target = BAR_PER_SPEED * speed / leak_factor(n);
    bar += (target - bar) * (1 - exp(-dt / TAU_S));
    double measured = bar + 0.02 * noise(n ^ 0x77);
    if (n % 250 == 125)
        measured += 2.5; /* water hammer */
    struct reading r = {n, measured, now_ns};
    n++;
    int32_t sent = ew_send(out, &r, sizeof r);
    return sent < 0 ? sent : 0;
}

EW_SNAPSHOT() { return ew_snapshot_put(&n, sizeof n); }

EW_RESTORE(state, len) {
    if (!ew_read_u64(state, len, 0, &n))
        return -1;
    ew_logf(EW_INFO, "resuming at reading %llu", (unsigned long long)n);
    return 0;
}
