/* gw-pressure-alarm: limits on the filtered discharge pressure (n: u64,
 * bar: f64, t_ns: i64) from pressure-filtered, as a plant's alarm block
 * does them. It sends (active: u32, severity: u32, bar: f64, tag) on
 * alarms for gw-alarm-manager:
 *   - "pressure-high" (alarm) above 5.5 bar, "pressure-low" (warning)
 *     below 3.0 bar, each only after the condition held for 2 s (a delay
 *     on: a passing dip is no alarm), each cleared 0.2 bar back inside
 *     the limit;
 *   - the low limit is armed only once the pressure first came above it,
 *     so starting the pump is not an alarm.
 * The number of alarms raised survives restarts through a snapshot. */
#include "edgeward.h"

#define HIGH_BAR 5.5
#define LOW_BAR 3.0
#define HYSTERESIS_BAR 0.2
#define DELAY_NS 2000000000ll

struct limit {
    const char *tag;
    uint32_t severity;
    int64_t since; /* when the condition began, 0 when it does not hold */
    int active;
};

static struct limit high = {"pressure-high", 2, 0, 0}, low = {"pressure-low", 1, 0, 0};
static int32_t alarms;
static int armed;
static uint64_t raised;

static int32_t send(struct limit *l, double bar) {
    uint8_t message[64];
    uint32_t head[2] = {(uint32_t)l->active, l->severity};
    size_t tag = strlen(l->tag);
    memcpy(message, head, sizeof head);
    memcpy(message + 8, &bar, sizeof bar);
    memcpy(message + 16, l->tag, tag);
    int32_t code = ew_send(alarms, message, 16 + tag);
    return code < 0 ? code : 0;
}

/* Updates one limit: beyond = the condition holds, inside = back inside
 * the limit by the hysteresis. */
static int32_t check(struct limit *l, int beyond, int inside, double bar, int64_t t) {
    if (!l->active) {
        if (!beyond) {
            l->since = 0;
            return 0;
        }
        if (!l->since)
            l->since = t;
        if (t - l->since < DELAY_NS)
            return 0;
        l->active = 1;
        raised++;
        ew_logf(EW_WARN, "%s: %.2f bar for 2 s", l->tag, bar);
        return send(l, bar);
    }
    if (!inside)
        return 0;
    l->active = 0;
    l->since = 0;
    return send(l, bar);
}

EW_INIT() {
    alarms = ew_channel("alarms");
    return alarms < 0 ? alarms : 0;
}

EW_ON_MESSAGE(channel, message, len) {
    double bar;
    uint64_t t;
    if (!ew_read_f64(message, len, 8, &bar) || !ew_read_u64(message, len, 16, &t))
        return 0;
    if (bar > LOW_BAR)
        armed = 1;
    int32_t code = check(&high, bar > HIGH_BAR, bar < HIGH_BAR - HYSTERESIS_BAR, bar, (int64_t)t);
    if (code == 0 && armed)
        code = check(&low, bar < LOW_BAR, bar > LOW_BAR + HYSTERESIS_BAR, bar, (int64_t)t);
    return code;
}

EW_SNAPSHOT() { return ew_snapshot_put(&raised, sizeof raised); }

EW_RESTORE(state, len) { return ew_read_u64(state, len, 0, &raised) ? 0 : -1; }
