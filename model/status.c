/* status.c — strings for ks_status and the helpers that fill a ks_error. */
#include "ks_status.h"

#include <stdio.h>

const char *ks_status_str(ks_status s) {
    switch (s) {
#define KS_X(name, val, text) \
    case name:                \
        return text;
        KS_STATUS_LIST(KS_X)
#undef KS_X
    }
    return "unknown status";
}

ks_status ks_error_setv(ks_error *err, ks_status code, const char *fmt, va_list ap) {
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return code;
}

ks_status ks_error_set(ks_error *err, ks_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ks_error_setv(err, code, fmt, ap);
    va_end(ap);
    return code;
}

void ks_error_clear(ks_error *err) {
    if (err) {
        err->code = KS_OK;
        err->msg[0] = '\0';
    }
}
