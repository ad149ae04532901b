/* select.c — the three selections of a recording: which hook points (globs with layer
 * ranges), which positions of a prompt, which query heads. Parsed strictly: a selection that
 * names nothing, or something the model does not have, is an error that quotes it. */
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ks_dump.h"

static const char *const hook_suffix[] = {
#define KS_X(e, s, l) s,
    KS_HOOK_LIST(KS_X)
#undef KS_X
};
static const int hook_per_layer[] = {
#define KS_X(e, s, l) l,
    KS_HOOK_LIST(KS_X)
#undef KS_X
};

/* Copy [b, e) trimmed of spaces into buf (cap bytes); false when it does not fit. */
static bool trimmed(const char *b, const char *e, char *buf, size_t cap) {
    while (b < e && isspace((unsigned char)*b)) b++;
    while (e > b && isspace((unsigned char)e[-1])) e--;
    if ((size_t)(e - b) >= cap) return false;
    memcpy(buf, b, (size_t)(e - b));
    buf[e - b] = 0;
    return true;
}

static bool parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

/* "blocks.A-B.rest": expand the layer range into explicit names matched against rest. */
static ks_status match_range(const char *pat, const ks_config *c, bool *sel, int *hits,
                             ks_error *err) {
    const char *p = pat + 7; /* after "blocks." */
    const char *dot = strchr(p, '.');
    char a[16], b[16];
    const char *dash = strchr(p, '-');
    if (!dot || !dash || dash > dot || dash - p >= (long)sizeof a || dot - dash - 1 >= (long)sizeof b)
        return KS_ERR_NOT_FOUND;
    memcpy(a, p, (size_t)(dash - p));
    a[dash - p] = 0;
    memcpy(b, dash + 1, (size_t)(dot - dash - 1));
    b[dot - dash - 1] = 0;
    long lo, hi;
    if (!parse_long(a, &lo) || !parse_long(b, &hi)) return KS_ERR_NOT_FOUND;
    if (lo < 0 || hi < lo)
        return ks_error_set(err, KS_ERR_ARG, "--hooks '%s': bad layer range %ld-%ld", pat, lo, hi);
    if (hi >= c->n_layers)
        return ks_error_set(err, KS_ERR_ARG,
                            "--hooks '%s': layer %ld is out of range (the model has layers 0-%d)",
                            pat, hi, c->n_layers - 1);
    const char *rest = dot + 1;
    for (int h = 0; h < KS_HOOK_COUNT; h++) {
        if (!hook_per_layer[h] || fnmatch(rest, hook_suffix[h], 0) != 0) continue;
        for (long l = lo; l <= hi; l++) {
            sel[h * (c->n_layers + 1) + l + 1] = true;
            (*hits)++;
        }
    }
    return KS_OK;
}

ks_status ks_select_hooks(const char *spec, const ks_config *c, bool *sel, ks_error *err) {
    size_t nsel = (size_t)KS_HOOK_COUNT * (size_t)(c->n_layers + 1);
    memset(sel, 0, nsel * sizeof *sel);
    if (!spec) return ks_error_set(err, KS_ERR_ARG, "--hooks: no selection given");
    int total = 0;
    for (const char *p = spec;;) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        char pat[256];
        if (!trimmed(p, e, pat, sizeof pat))
            return ks_error_set(err, KS_ERR_ARG, "--hooks: pattern too long");
        if (pat[0]) {
            int hits = 0;
            ks_status st = KS_ERR_NOT_FOUND;
            if (strncmp(pat, "blocks.", 7) == 0) st = match_range(pat, c, sel, &hits, err);
            if (st != KS_OK && st != KS_ERR_NOT_FOUND) return st;
            if (st == KS_ERR_NOT_FOUND) { /* a plain glob over full names */
                char name[128];
                for (int h = 0; h < KS_HOOK_COUNT; h++) {
                    int l0 = hook_per_layer[h] ? 0 : -1, l1 = hook_per_layer[h] ? c->n_layers - 1 : -1;
                    for (int l = l0; l <= l1; l++) {
                        ks_hook_name((ks_hook_point)h, l, name, sizeof name);
                        if (fnmatch(pat, name, 0) == 0) {
                            sel[h * (c->n_layers + 1) + l + 1] = true;
                            hits++;
                        }
                    }
                }
            }
            if (hits == 0) {
                /* say why: a known suffix at a layer the model lacks, or an unknown name */
                bool known = false;
                for (int h = 0; h < KS_HOOK_COUNT; h++) {
                    const char *suf = hook_suffix[h];
                    size_t ls = strlen(suf), lp = strlen(pat);
                    if (lp >= ls && strcmp(pat + lp - ls, suf) == 0) known = true;
                }
                if (known)
                    return ks_error_set(err, KS_ERR_ARG,
                                        "--hooks '%s' matches no hook point of this model "
                                        "(layers 0-%d)",
                                        pat, c->n_layers - 1);
                return ks_error_set(err, KS_ERR_ARG,
                                    "--hooks '%s' matches no hook point; names are hook_embed, "
                                    "blocks.L.<point> (hook_resid_pre, ln1.hook_normalized, "
                                    "attn.hook_q|k|v|rot_q|rot_k|attn_scores|pattern|z, "
                                    "hook_attn_out, hook_resid_mid, ln2.hook_normalized, "
                                    "mlp.hook_pre|pre_linear|post, hook_mlp_out, "
                                    "hook_resid_post), ln_final.hook_normalized, logits; L may "
                                    "be *, a number or a range A-B",
                                    pat);
            }
            total += hits;
        }
        if (!*e) break;
        p = e + 1;
    }
    if (total == 0) return ks_error_set(err, KS_ERR_ARG, "--hooks: the selection is empty");
    return KS_OK;
}

/* Python-style index: negative counts from the end. */
static bool resolve_index(long v, int n, int *out) {
    if (v < 0) v += n;
    if (v < 0 || v >= n) return false;
    *out = (int)v;
    return true;
}

ks_status ks_select_positions(const char *spec, int n, bool *keep, int *n_keep, ks_error *err) {
    memset(keep, 0, (size_t)n * sizeof *keep);
    *n_keep = 0;
    if (n <= 0) return KS_OK;
    if (!spec || strcmp(spec, "all") == 0) {
        for (int i = 0; i < n; i++) keep[i] = true;
        *n_keep = n;
        return KS_OK;
    }
    if (strcmp(spec, "last") == 0) spec = "-1";
    else if (strcmp(spec, "first") == 0) spec = "0";
    for (const char *p = spec;;) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        char item[64];
        if (!trimmed(p, e, item, sizeof item) || !item[0])
            return ks_error_set(err, KS_ERR_ARG, "--positions '%s': empty or overlong item", spec);
        char *colon = strchr(item, ':');
        if (colon) { /* slice a:b, either side may be empty; clamped like Python */
            *colon = 0;
            long a = 0, b = n;
            if (item[0] && !parse_long(item, &a))
                return ks_error_set(err, KS_ERR_ARG, "--positions '%s': '%s' is not an integer", spec, item);
            if (colon[1] && !parse_long(colon + 1, &b))
                return ks_error_set(err, KS_ERR_ARG, "--positions '%s': '%s' is not an integer", spec, colon + 1);
            if (a < 0) a += n;
            if (b < 0) b += n;
            if (a < 0) a = 0;
            if (b > n) b = n;
            for (long i = a; i < b; i++) keep[i] = true;
        } else {
            long v;
            int idx;
            if (!parse_long(item, &v))
                return ks_error_set(err, KS_ERR_ARG,
                                    "--positions '%s': '%s' is not an integer, a slice A:B, "
                                    "'all', 'first' or 'last'",
                                    spec, item);
            if (!resolve_index(v, n, &idx))
                return ks_error_set(err, KS_ERR_RANGE,
                                    "--positions '%s': position %ld is outside a prompt of %d "
                                    "tokens",
                                    spec, v, n);
            keep[idx] = true;
        }
        if (!*e) break;
        p = e + 1;
    }
    for (int i = 0; i < n; i++) *n_keep += keep[i];
    return KS_OK;
}

ks_status ks_select_heads(const char *spec, int n_heads, int *heads, int *n_out, ks_error *err) {
    *n_out = 0;
    if (!spec || strcmp(spec, "all") == 0) {
        for (int h = 0; h < n_heads; h++) heads[h] = h;
        *n_out = n_heads;
        return KS_OK;
    }
    bool *on = calloc((size_t)n_heads, 1);
    if (!on) return ks_error_set(err, KS_ERR_NOMEM, "--heads: out of memory");
    ks_status st = KS_OK;
    for (const char *p = spec;;) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        char item[64];
        long a, b;
        if (!trimmed(p, e, item, sizeof item) || !item[0]) {
            st = ks_error_set(err, KS_ERR_ARG, "--heads '%s': empty or overlong item", spec);
            break;
        }
        char *dash = strchr(item + 1, '-');
        if (dash) {
            *dash = 0;
            if (!parse_long(item, &a) || !parse_long(dash + 1, &b) || b < a) {
                st = ks_error_set(err, KS_ERR_ARG, "--heads '%s': bad range", spec);
                break;
            }
        } else if (!parse_long(item, &a)) {
            st = ks_error_set(err, KS_ERR_ARG, "--heads '%s': '%s' is not a head number", spec, item);
            break;
        } else {
            b = a;
        }
        if (a < 0 || b >= n_heads) {
            st = ks_error_set(err, KS_ERR_RANGE, "--heads '%s': head %ld is out of range (the model has heads 0-%d)",
                              spec, a < 0 ? a : b, n_heads - 1);
            break;
        }
        for (long h = a; h <= b; h++) on[h] = true;
        if (!*e) break;
        p = e + 1;
    }
    if (!st)
        for (int h = 0; h < n_heads; h++)
            if (on[h]) heads[(*n_out)++] = h;
    free(on);
    return st;
}
