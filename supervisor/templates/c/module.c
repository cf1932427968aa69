/* @NAME@: an edgeward module in C. Every tick it counts, publishes the
 * count on channel `@NAME@` and logs every 10th; the count survives
 * restarts in a snapshot. edgeward.h is the SDK (docs/guest-abi.md in the
 * edgeward repository describes the ABI underneath). */
#include "edgeward.h"

static int32_t out;
static uint64_t ticks;

EW_INIT() {
    out = ew_channel("@NAME@");
    return out < 0 ? out : 0;
}

EW_ON_TICK(now_ns) {
    (void)now_ns;
    ticks++;
    if (ticks % 10 == 0)
        ew_logf(EW_INFO, "@NAME@: %llu ticks", (unsigned long long)ticks);
    return ew_send(out, &ticks, sizeof ticks);
}

EW_SNAPSHOT() { return ew_snapshot_put(&ticks, sizeof ticks); }

EW_RESTORE(state, len) {
    if (!ew_read_u64(state, len, 0, &ticks))
        return -1;
    ew_logf(EW_INFO, "@NAME@: restored %llu ticks", (unsigned long long)ticks);
    return 0;
}
