/* gw-motor-pid: the drive's current loop, a PI controller ticking every
 * 1 ms ([schedule] tick_us = 1000). It holds the motor current (n: u64,
 * amps: f64, t_ns: i64) from current-filtered at the setpoint from
 * current-setpoint (same layout; 10 A until the recipe says otherwise) by
 * setting the duty cycle, 0..100 %, which it publishes every 10 ticks
 * (10 ms) on drive-cmd as (n: u64, duty: f64, t_ns: i64) for the motor
 * (gw-current-sensor).
 *
 * The measurement arrives every 20 ms; between two, the loop integrates
 * on the last one (a zero-order hold), as a drive's inner loop does with
 * a slower fieldbus. Anti-windup: the integral stops while the output is
 * saturated in the same direction. The integral survives restarts
 * through a snapshot, so a restarted loop picks up where it was instead
 * of starting the motor from zero duty (a bumpless restart). */
#include <math.h>

#include "edgeward.h"

#define KP 2.0  /* % of duty per A of error */
#define KI 20.0 /* % of duty per A·s */
#define PUBLISH_EVERY 10

struct reading {
    uint64_t n;
    double value;
    int64_t t_ns;
};

static int32_t measurement, setpoint_ch, drive;
static double setpoint = 10.0, amps;
static int measured;
static int64_t last_ns;
static uint64_t ticks, sent;
static double integral; /* % of duty */

EW_INIT() {
    measurement = ew_channel("current-filtered");
    setpoint_ch = ew_channel("current-setpoint");
    drive = ew_channel("drive-cmd");
    if (measurement < 0 || setpoint_ch < 0 || drive < 0)
        return EW_ERR_DENIED;
    return 0;
}

EW_ON_MESSAGE(channel, message, len) {
    double value;
    if (!ew_read_f64(message, len, 8, &value) || isnan(value))
        return 0;
    if (channel == measurement) {
        amps = value;
        measured = 1;
    } else if (channel == setpoint_ch && value >= 0 && value <= 40) {
        setpoint = value;
    }
    return 0;
}

EW_ON_TICK(now_ns) {
    double dt = last_ns ? (double)(now_ns - last_ns) / 1e9 : 0.001;
    last_ns = now_ns;
    if (dt > 0.05)
        dt = 0.05; /* after a stall, do not integrate the whole gap */
    if (!measured)
        return 0;
    double error = setpoint - amps;
    double output = KP * error + integral;
    if ((output < 100 || error < 0) && (output > 0 || error > 0))
        integral += KI * error * dt;
    output = fmin(fmax(KP * error + integral, 0), 100);
    if (++ticks % PUBLISH_EVERY)
        return 0;
    struct reading r = {sent++, output, now_ns};
    int32_t code = ew_send(drive, &r, sizeof r);
    return code < 0 ? code : 0;
}

EW_SNAPSHOT() {
    double state[2] = {integral, (double)sent};
    return ew_snapshot_put(state, sizeof state);
}

EW_RESTORE(state, len) {
    double saved[2];
    if (len != sizeof saved)
        return -1;
    memcpy(saved, state, sizeof saved);
    integral = fmin(fmax(saved[0], 0), 100);
    sent = (uint64_t)saved[1];
    ew_logf(EW_INFO, "restored the integral at %.1f %% duty", integral);
    return 0;
}
