/* gw-modbus-decoder: decodes the power meter's Modbus RTU answers, the raw
 * bytes gw-meter-sim publishes on modbus-rtu, as a protocol adapter on a
 * serial line does:
 *   - the CRC-16/MODBUS (reflected polynomial 0xA001, initial 0xFFFF,
 *     sent low byte first) must match, else the frame is counted as bad
 *     and dropped; so are frames too short to hold one;
 *   - an exception answer (function code | 0x80) is counted with its
 *     exception code;
 *   - an answer to "read holding registers" (0x03) from slave 1 with 16
 *     data bytes is decoded: registers 0 voltage ×10, 1 current ×100,
 *     2–3 active power W (u32, high word first), 4–5 energy Wh (u32),
 *     6 frequency ×100, 7 power factor ×1000, all big-endian;
 * and publishes on meter-values
 *
 *     (n: u64, volts: f64, amps: f64, kw: f64, kwh: f64, pf: f64,
 *      bad_frames: u64)
 *
 * for gw-energy-meter and gw-reporter. The frame counts survive restarts
 * through a snapshot. The first bad frame is logged in hex, then every
 * 50th with the counts. */
#include "edgeward.h"

#define SLAVE 1
#define READ_HOLDING 0x03
#define REGISTERS 8

static int32_t out;
static struct {
    uint64_t good, bad_crc, short_frames, exceptions, unexpected;
} counts;

static uint16_t crc16(const uint8_t *b, size_t len) {
    uint16_t crc = 0xFFFF;
    for (size_t i = 0; i < len; i++) {
        crc ^= b[i];
        for (int bit = 0; bit < 8; bit++)
            crc = crc & 1 ? (uint16_t)((crc >> 1) ^ 0xA001) : (uint16_t)(crc >> 1);
    }
    return crc;
}

static uint16_t reg(const uint8_t *data, int i) { return (uint16_t)(data[2 * i] << 8 | data[2 * i + 1]); }

static uint64_t bad(void) { return counts.bad_crc + counts.short_frames; }

static void log_bad(const uint8_t *frame, size_t len, const char *why) {
    if (bad() == 1) {
        char hex[3 * 64 + 1] = "";
        for (size_t i = 0; i < len && i < 64; i++)
            snprintf(hex + 3 * i, 4, " %02x", frame[i]);
        ew_logf(EW_WARN, "bad frame (%s):%s", why, hex);
    } else if (bad() % 50 == 0) {
        ew_logf(EW_WARN, "%llu bad frames (%llu CRC, %llu short) of %llu; %llu exceptions",
                (unsigned long long)bad(), (unsigned long long)counts.bad_crc,
                (unsigned long long)counts.short_frames,
                (unsigned long long)(bad() + counts.good + counts.exceptions + counts.unexpected),
                (unsigned long long)counts.exceptions);
    }
}

EW_INIT() {
    out = ew_channel("meter-values");
    return out < 0 ? out : 0;
}

EW_ON_MESSAGE(channel, message, len) {
    const uint8_t *frame = message;
    if (len < 5) {
        counts.short_frames++;
        log_bad(frame, len, "short");
        return 0;
    }
    uint16_t sent_crc = (uint16_t)(frame[len - 2] | frame[len - 1] << 8);
    if (crc16(frame, len - 2) != sent_crc) {
        counts.bad_crc++;
        log_bad(frame, len, "CRC");
        return 0;
    }
    if (frame[1] & 0x80) {
        counts.exceptions++;
        return 0;
    }
    if (frame[0] != SLAVE || frame[1] != READ_HOLDING || frame[2] != 2 * REGISTERS ||
        len != 3 + 2 * REGISTERS + 2) {
        counts.unexpected++;
        return 0;
    }
    const uint8_t *data = frame + 3;
    counts.good++;
    struct {
        uint64_t n;
        double volts, amps, kw, kwh, pf;
        uint64_t bad_frames;
    } values = {
        counts.good,
        reg(data, 0) / 10.0,
        reg(data, 1) / 100.0,
        (double)((uint32_t)reg(data, 2) << 16 | reg(data, 3)) / 1000.0,
        (double)((uint32_t)reg(data, 4) << 16 | reg(data, 5)) / 1000.0,
        reg(data, 7) / 1000.0,
        bad(),
    };
    int32_t code = ew_send(out, &values, sizeof values);
    return code < 0 ? code : 0;
}

EW_SNAPSHOT() { return ew_snapshot_put(&counts, sizeof counts); }

EW_RESTORE(state, len) {
    if (len != sizeof counts)
        return -1;
    memcpy(&counts, state, sizeof counts);
    ew_logf(EW_INFO, "restored counts: %llu good frames, %llu bad", (unsigned long long)counts.good,
            (unsigned long long)bad());
    return 0;
}
