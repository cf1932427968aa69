/* The bench's round-trip prober (scripts/bench gateway, rtt_p99_us): on
 * every tick sends a ping (seq: u64, sent_ns: i64) on `ping`; an echo
 * module sends it back on `pong`, and the round trip is now − sent_ns.
 * Every `--every` echoes (default 500) it logs
 *     rtt: n=N p50_ns=X p99_ns=Y max_ns=Z lost=L
 * (nearest-rank percentiles of that window; lost: pings of the window
 * that never came back), then starts a new window. */
#include "edgeward.h"

#define MAX_WINDOW 10000

static int32_t ping, pong;
static uint64_t next_seq, expected_seq, lost;
static size_t every, count;
static uint32_t samples[MAX_WINDOW];

static int by_value(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

EW_INIT() {
    double n = ew_arg_f64("--every", 500);
    every = n >= 1 && n <= MAX_WINDOW ? (size_t)n : 500;
    ping = ew_channel("ping");
    pong = ew_channel("pong");
    return ping < 0 || pong < 0 ? -1 : 0;
}

EW_ON_TICK(now_ns) {
    struct {
        uint64_t seq;
        int64_t sent_ns;
    } message = {next_seq++, ew_now_ns()};
    (void)now_ns;
    return ew_send(ping, &message, sizeof message) == 0 ? 0 : -1;
}

EW_ON_MESSAGE(channel, message, len) {
    int64_t now = ew_now_ns();
    uint64_t seq, sent;
    if (channel != pong || !ew_read_u64(message, len, 0, &seq) || !ew_read_u64(message, len, 8, &sent))
        return -1;
    if (seq < expected_seq)
        return 0; /* a late duplicate cannot happen; ignore it if it did */
    lost += seq - expected_seq;
    expected_seq = seq + 1;
    int64_t rtt = now - (int64_t)sent;
    samples[count++] = rtt < 0 ? 0 : rtt > UINT32_MAX ? UINT32_MAX : (uint32_t)rtt;
    if (count == every) {
        qsort(samples, count, sizeof samples[0], by_value);
        /* Nearest rank: ceil(q × n) − 1. */
        ew_logf(EW_INFO, "rtt: n=%zu p50_ns=%u p99_ns=%u max_ns=%u lost=%llu", count,
                samples[(count * 50 + 99) / 100 - 1], samples[(count * 99 + 99) / 100 - 1],
                samples[count - 1], (unsigned long long)lost);
        count = 0;
        lost = 0;
    }
    return 0;
}
