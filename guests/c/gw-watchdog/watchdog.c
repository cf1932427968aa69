/* gw-watchdog: notices a sensor that went silent, which no filter or
 * limit can (a dead sensor sends no bad value: it sends nothing). It
 * subscribes to the raw channels of the line's six sources and, every
 * tick (100 ms), checks when each last delivered a message. A source
 * silent for longer than its limit (about ten of its periods) raises
 * "stale:CHANNEL" (warning) on alarms as (active: u32, severity: u32,
 * silent_ms: f64, tag); its next message clears it. A source is watched
 * only once it has sent something, so modules that start later are not
 * stale.
 *
 * gw-current-sensor's fieldbus dropout (400 ms every minute) is what it
 * catches in the demo. The stale counts survive restarts through a
 * snapshot. */
#include "edgeward.h"

struct source {
    const char *channel;
    int64_t limit_ns;
    int32_t handle;
    int64_t last_ns; /* 0 before its first message */
    int stale;
};

static struct source sources[] = {
    {"temp-raw", 1000000000ll, -1, 0, 0},     {"vib-raw", 250000000ll, -1, 0, 0},
    {"pressure-raw", 250000000ll, -1, 0, 0},  {"current-raw", 250000000ll, -1, 0, 0},
    {"modbus-rtu", 1000000000ll, -1, 0, 0},   {"conveyor-speed", 500000000ll, -1, 0, 0},
};
#define SOURCES (sizeof sources / sizeof sources[0])

static int32_t alarms;
static uint64_t stale_counts[SOURCES];

static int32_t send(const struct source *s, double silent_ms) {
    uint8_t message[64];
    uint32_t head[2] = {(uint32_t)s->stale, 1};
    size_t name = strlen(s->channel);
    memcpy(message, head, sizeof head);
    memcpy(message + 8, &silent_ms, sizeof silent_ms);
    memcpy(message + 16, "stale:", 6);
    memcpy(message + 22, s->channel, name);
    int32_t code = ew_send(alarms, message, 22 + name);
    return code < 0 ? code : 0;
}

EW_INIT() {
    alarms = ew_channel("alarms");
    if (alarms < 0)
        return alarms;
    for (size_t i = 0; i < SOURCES; i++)
        if ((sources[i].handle = ew_channel(sources[i].channel)) < 0)
            return sources[i].handle;
    return 0;
}

EW_ON_MESSAGE(channel, message, len) {
    int64_t now = ew_now_ns();
    for (size_t i = 0; i < SOURCES; i++) {
        struct source *s = &sources[i];
        if (s->handle != channel)
            continue;
        double silent_ms = s->last_ns ? (double)(now - s->last_ns) / 1e6 : 0;
        s->last_ns = now;
        if (!s->stale)
            return 0;
        s->stale = 0;
        ew_logf(EW_INFO, "%s: back after %.0f ms", s->channel, silent_ms);
        return send(s, silent_ms);
    }
    return 0;
}

EW_ON_TICK(now_ns) {
    for (size_t i = 0; i < SOURCES; i++) {
        struct source *s = &sources[i];
        if (!s->last_ns || s->stale || now_ns - s->last_ns <= s->limit_ns)
            continue;
        s->stale = 1;
        stale_counts[i]++;
        double silent_ms = (double)(now_ns - s->last_ns) / 1e6;
        ew_logf(EW_WARN, "%s: no message for %.0f ms (stale %llu times)", s->channel, silent_ms,
                (unsigned long long)stale_counts[i]);
        int32_t code = send(s, silent_ms);
        if (code < 0)
            return code;
    }
    return 0;
}

EW_SNAPSHOT() { return ew_snapshot_put(stale_counts, sizeof stale_counts); }

EW_RESTORE(state, len) {
    if (len != sizeof stale_counts)
        return -1;
    memcpy(stale_counts, state, sizeof stale_counts);
    return 0;
}
