/* tap.h — a minimal TAP producer for meson's `protocol: 'tap'` tests, plus the one
 * setting through which tests find the shared data (KS_SHARED_DATA). Header-only so
 * each test is one file. */
#ifndef KS_TAP_H
#define KS_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ks_status.h"

static int tap_n = 0, tap_failed = 0;

static inline void tap_plan_done(void) { printf("1..%d\n", tap_n); }

static inline int tap_ok(int cond, const char *fmt, ...) {
    va_list ap;
    tap_n++;
    printf("%s %d - ", cond ? "ok" : "not ok", tap_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond) tap_failed++;
    fflush(stdout);
    return cond;
}

static inline void tap_skip(const char *fmt, ...) {
    va_list ap;
    tap_n++;
    printf("ok %d # SKIP ", tap_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static inline void tap_diag(const char *fmt, ...) {
    va_list ap;
    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static inline int tap_done(void) {
    tap_plan_done();
    return tap_failed ? 1 : 0;
}

/* Directory of the shared data: $KS_SHARED_DATA, else ../shared/data beside the source tree
 * (meson passes KS_SOURCE_ROOT). */
static inline const char *ks_test_shared_data(void) {
    static char buf[4096];
    const char *e = getenv("KS_SHARED_DATA");
    if (e && *e) return e;
    const char *root = getenv("KS_SOURCE_ROOT");
    snprintf(buf, sizeof buf, "%s/../shared/data", root && *root ? root : ".");
    return buf;
}

/* Path of a file of the shared data, or NULL when it is absent. When absent: under CI=true
 * a failing test point is recorded (CI must have the data); otherwise a visible SKIP. */
static inline const char *ks_test_data_file(const char *rel, char *buf, size_t cap) {
    struct stat st;
    snprintf(buf, cap, "%s/%s", ks_test_shared_data(), rel);
    if (stat(buf, &st) == 0) return buf;
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0)
        tap_ok(0, "shared data file %s is missing (CI=true requires KS_SHARED_DATA)", buf);
    else
        tap_skip("shared data file %s is missing; set KS_SHARED_DATA", buf);
    return NULL;
}

/* Path of a file under the source tree (fixtures committed in tests/). */
static inline const char *ks_test_src_file(const char *rel, char *buf, size_t cap) {
    const char *root = getenv("KS_SOURCE_ROOT");
    snprintf(buf, cap, "%s/%s", root && *root ? root : ".", rel);
    return buf;
}

/* Copy a file byte for byte; false on any failure. */
static inline bool ks_test_copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    bool ok = a && b;
    char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    if (a) fclose(a);
    if (b && fclose(b) != 0) ok = false;
    return ok;
}

/* Do two files hold the same bytes? */
static inline bool ks_test_same_bytes(const char *a_path, const char *b_path) {
    FILE *a = fopen(a_path, "rb"), *b = fopen(b_path, "rb");
    bool same = a && b;
    while (same) {
        int ca = fgetc(a), cb = fgetc(b);
        same = ca == cb;
        if (ca == EOF) break;
    }
    if (a) fclose(a);
    if (b) fclose(b);
    return same;
}

/* The status named by its enum spelling ("KS_ERR_FORMAT"), as the malformed-case lists
 * write it; *ok false when no status has that name. */
static inline ks_status status_from_name(const char *name, bool *ok) {
    *ok = true;
#define KS_X(n, v, t) \
    if (!strcmp(name, #n)) return n;
    KS_STATUS_LIST(KS_X)
#undef KS_X
    *ok = false;
    return KS_OK;
}

#endif
