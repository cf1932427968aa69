/* gw-current-filter: smooths the motor current's readings (n: u64, amps:
 * f64, t_ns: i64) from current-raw and publishes the same layout on
 * current-filtered, for the 1 ms current loop, the motor protection and
 * the statistics:
 *   - a reading that is not a number or outside 0..60 A (the transducer's
 *     range) is dropped and counted;
 *   - the others go through a moving average of the last 5 (100 ms), which
 *     removes the commutation ripple: its pattern repeats every 5
 *     readings, so it averages out exactly.
 * The count of dropped readings survives restarts through a snapshot. */
#include <math.h>

#include "edgeward.h"

#define WINDOW 5

struct reading {
    uint64_t n;
    double value;
    int64_t t_ns;
};

static int32_t out;
static double window[WINDOW];
static int filled, next;
static uint64_t dropped;

EW_INIT() {
    out = ew_channel("current-filtered");
    return out < 0 ? out : 0;
}

EW_ON_MESSAGE(channel, message, len) {
    struct reading r;
    if (len != sizeof r)
        return 0;
    memcpy(&r, message, sizeof r);
    if (isnan(r.value) || r.value < 0 || r.value > 60) {
        dropped++;
        return 0;
    }
    window[next] = r.value;
    next = (next + 1) % WINDOW;
    if (filled < WINDOW)
        filled++;
    double sum = 0; /* summed again each time: no drift from a running sum */
    for (int i = 0; i < filled; i++)
        sum += window[i];
    r.value = sum / filled;
    int32_t sent = ew_send(out, &r, sizeof r);
    return sent < 0 ? sent : 0;
}

EW_SNAPSHOT() { return ew_snapshot_put(&dropped, sizeof dropped); }

EW_RESTORE(state, len) { return ew_read_u64(state, len, 0, &dropped) ? 0 : -1; }
