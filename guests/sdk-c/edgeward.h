/*
 * The C SDK for edgeward modules: one header, no library.
 *
 * A reactor module defines the handlers it needs with the EW_* macros
 * below; every handler is optional. The ABI underneath is in
 * docs/guest-abi.md; this header is the only place a C module needs to know
 * it.
 *
 *     #include "edgeward.h"
 *
 *     EW_ON_MESSAGE(channel, message, len) {
 *         double celsius;
 *         if (ew_read_f64(message, len, 8, &celsius) && celsius > 85.0)
 *             ew_logf(EW_WARN, "ALERT: temperature %.1f > 85.0", celsius);
 *         return 0;
 *     }
 *
 * Build (zig from PyPI's ziglang; the small stack matters, see
 * docs/guest-abi.md):
 *
 *     python3 -m ziglang cc --target=wasm32-wasi -mexec-model=reactor -O2 \
 *         -Wl,-z,stack-size=65536 -I guests/sdk-c -o alert.wasm alert.c
 *
 * Handlers return 0 for success; other values are logged by the host
 * (use negative codes of your own). Messages are the little-endian
 * encoding of docs/guest-abi.md ("Message encoding"): on wasm, a C number
 * copied with memcpy is already that encoding.
 */
#ifndef EDGEWARD_H
#define EDGEWARD_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

/* ---- raw imports (module "edgeward"); prefer the helpers below ---- */

#define EW_IMPORT(name) __attribute__((import_module("edgeward"), import_name(#name)))

EW_IMPORT(log) int32_t ew_sys_log(int32_t level, const void *ptr, int32_t len);
EW_IMPORT(now_ns) int64_t ew_sys_now_ns(void);
EW_IMPORT(channel) int32_t ew_sys_channel(const char *name, int32_t len);
EW_IMPORT(send) int32_t ew_sys_send(int32_t ch, const void *ptr, int32_t len);
EW_IMPORT(recv) int32_t ew_sys_recv(int32_t ch, void *buf, int32_t cap);
EW_IMPORT(recv_wait) int32_t ew_sys_recv_wait(int32_t ch, void *buf, int32_t cap, int64_t timeout_ns);
EW_IMPORT(channel_fd) int32_t ew_sys_channel_fd(int32_t ch);
EW_IMPORT(message_seq) int64_t ew_sys_message_seq(void);
EW_IMPORT(snapshot_put) int32_t ew_sys_snapshot_put(const void *ptr, int32_t len);
EW_IMPORT(snapshot_get) int32_t ew_sys_snapshot_get(void *buf, int32_t cap);

/* ---- error codes the imports return (negative) ---- */

#define EW_ERR_DENIED (-1)      /* the policy does not grant it */
#define EW_ERR_INVALID (-2)     /* a pointer, length or handle out of range */
#define EW_ERR_TOO_LARGE (-3)   /* over max_message_kib (send) or the buffer */
#define EW_ERR_FULL (-4)        /* a subscriber's ring is full */
#define EW_ERR_UNSUPPORTED (-5) /* not for this kind of module */
#define EW_ERR_TIMEOUT (-6)     /* no message in time (recv_wait) */

/* ---- log levels ---- */

#define EW_ERROR 0
#define EW_WARN 1
#define EW_INFO 2
#define EW_DEBUG 3

/* One line to the supervisor's output as "[module] level: text" (cut at
 * 1 KiB by the host). */
static inline void ew_log(int32_t level, const char *text) {
    ew_sys_log(level, text, (int32_t)strlen(text));
}

/* ew_log with printf formatting. */
__attribute__((format(printf, 2, 3))) static inline void ew_logf(int32_t level, const char *format, ...) {
    char line[1024];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (n < 0)
        return;
    ew_sys_log(level, line, n < (int)sizeof line ? n : (int)sizeof line - 1);
}

/* CLOCK_MONOTONIC in nanoseconds, the clock EW_ON_TICK receives. */
static inline int64_t ew_now_ns(void) { return ew_sys_now_ns(); }

/* The handle (>= 0) of a channel the policy grants, else EW_ERR_DENIED. */
static inline int32_t ew_channel(const char *name) { return ew_sys_channel(name, (int32_t)strlen(name)); }

/* One message to every subscriber of `ch`: 0, or an EW_ERR_* code. */
static inline int32_t ew_send(int32_t ch, const void *data, size_t len) {
    return ew_sys_send(ch, data, (int32_t)len);
}

/* Typed sends: one number as a message. */
static inline int32_t ew_send_f64(int32_t ch, double value) { return ew_send(ch, &value, sizeof value); }
static inline int32_t ew_send_i64(int32_t ch, int64_t value) { return ew_send(ch, &value, sizeof value); }
static inline int32_t ew_send_u32(int32_t ch, uint32_t value) { return ew_send(ch, &value, sizeof value); }

/* Typed reads: the number at byte `offset` of a message, if it is there.
 * Returns 1 and sets *out, or 0 when the message is too short. */
static inline int ew_read_f64(const void *message, size_t len, size_t offset, double *out) {
    if (offset > len || len - offset < sizeof *out)
        return 0;
    memcpy(out, (const uint8_t *)message + offset, sizeof *out);
    return 1;
}
static inline int ew_read_u64(const void *message, size_t len, size_t offset, uint64_t *out) {
    if (offset > len || len - offset < sizeof *out)
        return 0;
    memcpy(out, (const uint8_t *)message + offset, sizeof *out);
    return 1;
}

/* The sequence number of the message being handled (the same after a crash
 * redelivers it), -1 outside EW_ON_MESSAGE. */
static inline int64_t ew_message_seq(void) { return ew_sys_message_seq(); }

/* Command modules (a main program): the next message of `ch` into `buf`,
 * waiting at most `timeout_ns` (0: only looks; negative: for ever). Returns
 * its length, EW_ERR_TIMEOUT when none came, EW_ERR_TOO_LARGE if it does not
 * fit (it stays: call again with a larger buffer), or another EW_ERR_*. */
static inline int32_t ew_recv_wait(int32_t ch, void *buf, size_t cap, int64_t timeout_ns) {
    return ew_sys_recv_wait(ch, buf, (int32_t)cap, timeout_ns);
}

/* Command modules: a file descriptor for poll() that is readable while a
 * message of `ch` may be waiting (ew_recv_wait with timeout 0 takes it), so
 * one poll() waits for messages, timers and other fds at once. */
static inline int32_t ew_channel_fd(int32_t ch) { return ew_sys_channel_fd(ch); }

/* Saves `len` bytes of state; call it in EW_SNAPSHOT (at most 16 MiB). */
static inline int32_t ew_snapshot_put(const void *state, size_t len) {
    return ew_sys_snapshot_put(state, (int32_t)len);
}

/* The value after `name` in the module's args ([wasi] args), or NULL. */
static inline const char *ew_arg(const char *name) {
    static char **argv;
    static size_t argc;
    if (!argv) {
        size_t size;
        if (__wasi_args_sizes_get(&argc, &size) != 0)
            return NULL;
        argv = (char **)calloc(argc + 1, sizeof *argv);
        char *buffer = (char *)malloc(size);
        if (!argv || !buffer || __wasi_args_get((uint8_t **)argv, (uint8_t *)buffer) != 0) {
            argc = 0;
            return NULL;
        }
    }
    for (size_t i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return NULL;
}

/* The number after `name` in the args, or `otherwise`. */
static inline double ew_arg_f64(const char *name, double otherwise) {
    const char *value = ew_arg(name);
    char *end;
    double parsed = value ? strtod(value, &end) : 0;
    return value && *value && !*end ? parsed : otherwise;
}

/* ---- handlers: define the ones you need ---- */

#define EW_EXPORT(name) __attribute__((export_name(#name)))

/* int ew_init(void): once at start; non-zero refuses to start. */
#define EW_INIT() EW_EXPORT(ew_init) int32_t ew_init(void)
/* Every [schedule] tick_us with ew_now_ns(). */
#define EW_ON_TICK(now_ns) EW_EXPORT(ew_on_tick) int32_t ew_on_tick(int64_t now_ns)
/* For each message of a subscribed channel (the buffer is reused: copy what
 * you keep). */
#define EW_ON_MESSAGE(ch, message, len)                                                            \
    static int32_t ew_user_on_message(int32_t ch, const void *message, size_t len);              \
    EW_EXPORT(ew_on_message) int32_t ew_on_message(int32_t ch_, int32_t ptr_, int32_t len_) {      \
        return ew_user_on_message(ch_, (const void *)(uintptr_t)ptr_, (size_t)len_);             \
    }                                                                                              \
    static int32_t ew_user_on_message(int32_t ch, const void *message, size_t len)
/* Call ew_snapshot_put with the state and return 0; return 1 for "nothing
 * to save". */
#define EW_SNAPSHOT() EW_EXPORT(ew_snapshot) int32_t ew_snapshot(void)
/* Once at start, after ew_init, with the newest durable snapshot. */
#define EW_RESTORE(state, len)                                                                     \
    static int32_t ew_user_restore(const void *state, size_t len);                               \
    EW_EXPORT(ew_restore) int32_t ew_restore(int32_t ptr_, int32_t len_) {                         \
        return ew_user_restore((const void *)(uintptr_t)ptr_, (size_t)len_);                     \
    }                                                                                              \
    static int32_t ew_user_restore(const void *state, size_t len)
/* At the end of an upgrade's probation: 0 healthy. */
#define EW_HEALTH() EW_EXPORT(ew_health) int32_t ew_health(void)

/* The receive buffer the host asks for once (docs/guest-abi.md, ew_alloc):
 * provided here, weak so that a module of several files links. */
EW_EXPORT(ew_alloc) __attribute__((weak)) int32_t ew_alloc(int32_t len) {
    return (int32_t)(uintptr_t)malloc(len > 0 ? (size_t)len : 1);
}

#endif /* EDGEWARD_H */
