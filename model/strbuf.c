/* strbuf.c — the growable byte string shared inside model/ (decode, generation, chat). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model_private.h"

bool ks_strbuf_append(ks_strbuf *b, const void *s, size_t n) {
    if (n > SIZE_MAX - b->len - 1) return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        char *p = realloc(b->p, cap);
        if (!p) return false;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}
