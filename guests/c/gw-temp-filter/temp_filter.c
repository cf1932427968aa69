/* gw-temp-filter: cleans the barrel thermocouple's readings (n: u64,
 * celsius: f64, t_ns: i64) from temp-raw and publishes the same layout on
 * temp-filtered, one for each reading:
 *   - a dropout (NaN) or a reading outside -40..200 °C (a broken or open
 *     thermocouple reads full scale) is rejected, and the last filtered
 *     value is published again (held over);
 *   - accepted readings go through a median of the last 5, which removes
 *     single outliers but lets a real excursion (several readings) through.
 * The rejection counts survive restarts through a snapshot; every 100th
 * rejection is logged with the counts. */
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
static double held;
static struct {
    uint64_t dropouts, out_of_range;
} rejected;

static double median(void) {
    double sorted[WINDOW];
    memcpy(sorted, window, sizeof sorted);
    for (int i = 1; i < filled; i++) /* insertion sort: 5 values */
        for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
            double t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    return filled % 2 ? sorted[filled / 2] : (sorted[filled / 2 - 1] + sorted[filled / 2]) / 2;
}

EW_INIT() {
    out = ew_channel("temp-filtered");
    return out < 0 ? out : 0;
}

EW_ON_MESSAGE(channel, message, len) {
    struct reading r;
    if (len != sizeof r)
        return 0;
    memcpy(&r, message, sizeof r);
    if (isnan(r.value) || r.value < -40 || r.value > 200) {
        if (isnan(r.value))
            rejected.dropouts++;
        else
            rejected.out_of_range++;
        uint64_t total = rejected.dropouts + rejected.out_of_range;
        if (total % 100 == 0)
            ew_logf(EW_INFO, "%llu readings rejected (%llu dropouts, %llu out of range)",
                    (unsigned long long)total, (unsigned long long)rejected.dropouts,
                    (unsigned long long)rejected.out_of_range);
        if (!filled)
            return 0; /* nothing to hold over yet */
        r.value = held;
    } else {
        window[next] = r.value;
        next = (next + 1) % WINDOW;
        if (filled < WINDOW)
            filled++;
        r.value = held = median();
    }
    int32_t sent = ew_send(out, &r, sizeof r);
    return sent < 0 ? sent : 0;
}

EW_SNAPSHOT() { return ew_snapshot_put(&rejected, sizeof rejected); }

EW_RESTORE(state, len) {
    if (len != sizeof rejected)
        return -1;
    memcpy(&rejected, state, sizeof rejected);
    return 0;
}
