/* gw-pressure-stats: rolling statistics of the filtered discharge
 * pressure (n: u64, bar: f64, t_ns: i64) from pressure-filtered, over
 * windows of --window readings (default 250: 5 s at 20 ms). At the end of
 * each window it publishes on stats
 *
 *     (source: u32 = 3, count: u32, min: f64, max: f64, mean: f64,
 *      stddev: f64, name "pressure")
 *
 * for gw-maintenance, gw-historian and gw-reporter (Welford's algorithm,
 * one pass, no stored samples). A window starts over after a restart, so
 * there is no snapshot. */
#include <math.h>

#include "edgeward.h"

#define SOURCE 3

static int32_t stats;
static uint32_t window, count;
static double mean, m2, lo, hi;

EW_INIT() {
    stats = ew_channel("stats");
    window = (uint32_t)ew_arg_f64("--window", 250);
    if (window < 2)
        window = 2;
    return stats < 0 ? stats : 0;
}

EW_ON_MESSAGE(channel, message, len) {
    double x;
    if (!ew_read_f64(message, len, 8, &x) || isnan(x))
        return 0;
    if (count == 0)
        lo = hi = x;
    count++;
    double d = x - mean;
    mean += d / count;
    m2 += d * (x - mean);
    lo = fmin(lo, x);
    hi = fmax(hi, x);
    if (count < window)
        return 0;
    uint8_t message_out[64];
    uint32_t head[2] = {SOURCE, count};
    double values[4] = {lo, hi, mean, sqrt(m2 / (count - 1))};
    memcpy(message_out, head, sizeof head);
    memcpy(message_out + sizeof head, values, sizeof values);
    memcpy(message_out + 40, "pressure", 8);
    count = 0;
    mean = m2 = 0;
    int32_t code = ew_send(stats, message_out, 48);
    return code < 0 ? code : 0;
}
