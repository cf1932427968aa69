/* AlertOnHighTemp in C: subscribes to sensor readings (n: u64, celsius:
 * f64, start: u64), warns above `--threshold` (default 85.0), and keeps
 * its alert count across restarts in a snapshot. */
#include "edgeward.h"

static double threshold;
static uint64_t alerts;

EW_INIT() {
    threshold = ew_arg_f64("--threshold", 85.0);
    return 0;
}

EW_ON_MESSAGE(channel, reading, len) {
    double celsius;
    if (ew_read_f64(reading, len, 8, &celsius) && celsius > threshold)
        ew_logf(EW_WARN, "ALERT: temperature %.1f > %.1f (alert %llu)", celsius, threshold,
                (unsigned long long)++alerts);
    return 0;
}

EW_SNAPSHOT() { return ew_snapshot_put(&alerts, sizeof alerts); }

EW_RESTORE(state, len) {
    if (!ew_read_u64(state, len, 0, &alerts))
        return -1;
    ew_logf(EW_INFO, "restored %llu alerts", (unsigned long long)alerts);
    return 0;
}
