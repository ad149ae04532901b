/* ks_status.h — the one result type of koalascope, and the caller-owned error record.
 *
 * Every library function returns a ks_status; KS_OK is 0. Values are never renumbered
 * (append new ones at the end of the X-macro list). Detail goes into a ks_error that the
 * caller owns, so library code never prints or exits. */
#ifndef KS_STATUS_H
#define KS_STATUS_H

#include <stdarg.h>

#define KS_STATUS_LIST(X)                                                        \
    X(KS_OK, 0, "ok")                                                            \
    X(KS_ERR_IO, 1, "input/output error")                                        \
    X(KS_ERR_FORMAT, 2, "malformed file")                                        \
    X(KS_ERR_UNSUPPORTED, 3, "unsupported feature")                              \
    X(KS_ERR_NOMEM, 4, "out of memory")                                          \
    X(KS_ERR_ARG, 5, "invalid argument")                                         \
    X(KS_ERR_RANGE, 6, "value out of range")                                     \
    X(KS_ERR_INTERNAL, 7, "internal error")                                      \
    X(KS_ERR_NOT_FOUND, 8, "not found")                                          \
    X(KS_ERR_BACKEND, 9, "backend unavailable")

typedef enum {
#define KS_X(name, val, text) name = val,
    KS_STATUS_LIST(KS_X)
#undef KS_X
} ks_status;

/* Static string for a status; never NULL. */
const char *ks_status_str(ks_status s);

/* Error detail filled by library calls. Caller-owned; may be passed as NULL where the
 * caller does not care. msg names the file and the field where one is involved. */
typedef struct {
    ks_status code;
    char msg[768];
} ks_error;

/* Record a failure in err (if non-NULL) and return code. printf-style. */
ks_status ks_error_set(ks_error *err, ks_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
ks_status ks_error_setv(ks_error *err, ks_status code, const char *fmt, va_list ap);
void ks_error_clear(ks_error *err);

#endif
