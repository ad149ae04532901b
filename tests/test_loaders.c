/* test_loaders.c — checkpoint loaders and dtype conversion.
 *
 * Oracles: stories260K's PROVENANCE.md (config; the .bin and .gguf hold bit-identical
 * tensors; the GGUF vocabulary equals tok512.bin), IEEE-754 bit patterns for F16/BF16,
 * GGML's block definitions for Q8_0/Q4_0/Q4_K (values recomputed here from the definition,
 * exact: every product is representable), and safetensors checkpoints this test writes
 * itself from known values (F32 exact; F16/BF16 values chosen to be exactly representable). */
#include "tap.h"

#include <stdint.h>
#include <unistd.h>

#include "model_private.h"

/* ---------------------------------------------------------------- dtype */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_f16(void) {
    static const struct {
        uint16_t h;
        uint32_t f;
    } cases[] = {
        {0x0000, 0x00000000}, /* +0 */
        {0x8000, 0x80000000}, /* -0 */
        {0x3c00, 0x3f800000}, /* 1 */
        {0xc000, 0xc0000000}, /* -2 */
        {0x3555, 0x3eaaa000}, /* 0.333251953125 */
        {0x7bff, 0x477fe000}, /* 65504, largest finite */
        {0x0400, 0x38800000}, /* 2^-14, smallest normal */
        {0x0001, 0x33800000}, /* 2^-24, smallest subnormal */
        {0x03ff, 0x387fc000}, /* largest subnormal 1023 * 2^-24 */
        {0x8200, 0xb8000000}, /* -2^-15, subnormal */
        {0x7c00, 0x7f800000}, /* +inf */
        {0xfc00, 0xff800000}, /* -inf */
        {0x7e00, 0x7fc00000}, /* quiet nan */
        {0x7c01, 0x7f802000}, /* signalling nan, payload kept */
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t b[2] = {(uint8_t)(cases[i].h & 0xff), (uint8_t)(cases[i].h >> 8)};
        float f;
        ks_dtype_to_f32(KS_DTYPE_F16, b, &f, 1);
        if (f32_bits(f) != cases[i].f) {
            bad++;
            tap_diag("f16 %04x -> %08x, expected %08x", cases[i].h, f32_bits(f), cases[i].f);
        }
    }
    tap_ok(bad == 0, "F16 -> f32 bit patterns (zeros, normals, subnormals, inf, nan)");
}

static void test_bf16(void) {
    static const uint16_t in[] = {0x0000, 0x8000, 0x3f80, 0xc0a0, 0x0001, 0x0080, 0x7f7f,
                                  0x7f80, 0xff80, 0x7fc0, 0x7f81};
    int bad = 0;
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        uint8_t b[2] = {(uint8_t)(in[i] & 0xff), (uint8_t)(in[i] >> 8)};
        float f;
        ks_dtype_to_f32(KS_DTYPE_BF16, b, &f, 1);
        if (f32_bits(f) != (uint32_t)in[i] << 16) bad++;
    }
    tap_ok(bad == 0, "BF16 -> f32 is the top half of the f32 bits (subnormal, inf, nan incl.)");
}

static void test_q8_0(void) {
    uint8_t blk[2 * 34];
    for (int b = 0; b < 2; b++) {
        blk[34 * b] = 0x00;
        blk[34 * b + 1] = b ? 0xb8 : 0x38; /* f16 0x3800 = 0.5, 0xb800 = -0.5 */
        for (int j = 0; j < 32; j++) blk[34 * b + 2 + j] = (uint8_t)(int8_t)(j * 8 - 128);
    }
    float y[64];
    ks_dtype_to_f32(KS_DTYPE_Q8_0, blk, y, 64);
    int bad = 0;
    for (int b = 0; b < 2; b++)
        for (int j = 0; j < 32; j++)
            if (y[32 * b + j] != (b ? -0.5f : 0.5f) * (float)(j * 8 - 128)) bad++;
    tap_ok(bad == 0, "Q8_0 dequant: x = d * q (two blocks, signed q, exact)");
}

static void test_q4_0(void) {
    uint8_t blk[18];
    blk[0] = 0x00;
    blk[1] = 0x40; /* 2.0 */
    for (int j = 0; j < 16; j++) blk[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    float y[32];
    ks_dtype_to_f32(KS_DTYPE_Q4_0, blk, y, 32);
    int bad = 0;
    for (int j = 0; j < 16; j++) {
        if (y[j] != 2.0f * (float)(j - 8)) bad++;
        if (y[j + 16] != 2.0f * (float)((15 - j) - 8)) bad++;
    }
    tap_ok(bad == 0, "Q4_0 dequant: low nibbles first half, high nibbles second, x = d*(q-8)");
}

static void test_q4_k(void) {
    /* GGML block_q4_K: f16 d, f16 dmin, scales[12], qs[128]. The 6-bit scale/min of
     * sub-block s < 4 are the low 6 bits of scales[s] / scales[s+4]; for s >= 4 the low 4
     * bits are in scales[s+4] (scale: low nibble, min: high nibble) and the top 2 bits in
     * bits 6..7 of scales[s-4] (scale) and scales[s] (min). */
    static const uint8_t sc[8] = {1, 5, 17, 63, 33, 47, 20, 60};
    static const uint8_t mn[8] = {2, 0, 9, 40, 50, 17, 63, 31};
    uint8_t blk[144] = {0};
    blk[0] = 0x00; blk[1] = 0x3c; /* d = 1 */
    blk[2] = 0x00; blk[3] = 0x38; /* dmin = 0.5 */
    uint8_t *q = blk + 4;
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        q[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        q[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    for (int i = 0; i < 128; i++) blk[16 + i] = (uint8_t)(i * 7 + 3);
    float y[256];
    ks_dtype_to_f32(KS_DTYPE_Q4_K, blk, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++) {
        int s = e / 32, l = e % 32, pair = s / 2;
        uint8_t byte = blk[16 + 32 * pair + l];
        int nib = (s % 2 == 0) ? (byte & 15) : (byte >> 4);
        float want = 1.0f * (float)sc[s] * (float)nib - 0.5f * (float)mn[s];
        if (y[e] != want) {
            if (bad < 4) tap_diag("q4_k[%d] = %g, expected %g", e, y[e], want);
            bad++;
        }
    }
    tap_ok(bad == 0, "Q4_K dequant: 6-bit packed scales/mins, x = d*sc*q - dmin*m");
}

static void test_nbytes(void) {
    uint64_t n = 0;
    ks_error e;
    tap_ok(ks_dtype_nbytes(KS_DTYPE_Q4_K, 512, &n, &e) == KS_OK && n == 288, "nbytes q4_k 512 = 288");
    tap_ok(ks_dtype_nbytes(KS_DTYPE_Q8_0, 33, &n, &e) == KS_ERR_RANGE, "nbytes rejects partial block");
    tap_ok(ks_dtype_nbytes(KS_DTYPE_F32, UINT64_MAX / 2, &n, &e) == KS_ERR_RANGE,
           "nbytes rejects overflow");
}

/* ---------------------------------------------------------------- stories260K */

static size_t layer_field_elems(const ks_config *c, int f) {
    size_t dim = (size_t)c->dim, q = (size_t)c->n_heads * c->head_dim,
           kv = (size_t)c->n_kv_heads * c->head_dim, hid = (size_t)c->hidden_dim;
    size_t n[9] = {dim, q * dim, kv * dim, kv * dim, dim * q, dim, hid * dim, dim * hid, hid * dim};
    return n[f];
}

/* The f32 data of a field (both stories260K files are f32, kept in place). */
static const float *layer_field(const ks_layer_weights *w, int f) {
    const float *p[9] = {w->attn_norm, w->wq.data, w->wk.data, w->wv.data, w->wo.data,
                         w->ffn_norm, w->w_gate.data, w->w_down.data, w->w_up.data};
    return p[f];
}

static const ks_weight *layer_matrix(const ks_layer_weights *w, int f) {
    const ks_weight *p[9] = {NULL, &w->wq, &w->wk, &w->wv, &w->wo,
                             NULL, &w->w_gate, &w->w_down, &w->w_up};
    return p[f];
}

static bool same(const float *a, const float *b, size_t n) {
    return a && b && memcmp(a, b, n * sizeof(float)) == 0;
}

/* Pieces with SentencePiece's U+2581 turned into spaces and the llama2.c spelling of
 * BOS/EOS ("\n<s>\n") trimmed, so both vocabularies compare in one spelling. */
static void norm_piece(const char *p, char *out, size_t cap) {
    size_t o = 0;
    for (; *p && o + 1 < cap; p++) {
        if ((unsigned char)p[0] == 0xe2 && (unsigned char)p[1] == 0x96 && (unsigned char)p[2] == 0x81) {
            out[o++] = ' ';
            p += 2;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    if (!strcmp(out, "\n<s>\n")) strcpy(out, "<s>");
    if (!strcmp(out, "\n</s>\n")) strcpy(out, "</s>");
}

static void test_stories(void) {
    char pb[4096], pg[4096], pt[4096];
    const char *bin = ks_test_data_file("stories260K/stories260K.bin", pb, sizeof pb);
    const char *gguf = ks_test_data_file("stories260K/stories260K.gguf", pg, sizeof pg);
    const char *tokp = ks_test_data_file("stories260K/tok512.bin", pt, sizeof pt);
    if (!bin || !gguf || !tokp) return;
    ks_model *mb = NULL, *mg = NULL;
    ks_error e = {0};
    ks_model_options o = {.tokenizer_path = tokp};
    ks_status s = ks_model_open(bin, &o, &mb, &e);
    if (!tap_ok(s == KS_OK, "stories260K.bin loads (%s)", e.msg)) return;
    s = ks_model_open(gguf, NULL, &mg, &e);
    if (!tap_ok(s == KS_OK, "stories260K.gguf loads (%s)", e.msg)) {
        ks_model_close(mb);
        return;
    }
    const ks_config *c = ks_model_config(mb), *cg = ks_model_config(mg);
    tap_ok(c->dim == 64 && c->hidden_dim == 172 && c->n_layers == 5 && c->n_heads == 8 &&
               c->n_kv_heads == 4 && c->head_dim == 8 && c->vocab_size == 512 &&
               c->max_seq_len == 512 && c->tie_embeddings,
           "llama2c config = 64/172/5/8/4/512/512, tied");
    tap_ok(cg->dim == 64 && cg->hidden_dim == 172 && cg->n_layers == 5 && cg->n_heads == 8 &&
               cg->n_kv_heads == 4 && cg->head_dim == 8 && cg->vocab_size == 512 &&
               cg->max_seq_len == 2048 && fabsf(cg->rms_eps - 1e-5f) < 1e-12f &&
               cg->bos_id == 1 && cg->eos_id == 2,
           "gguf config = 64/172/5/8/4/512, context 2048, eps 1e-5, bos 1 eos 2");
    tap_ok(c->rope_style == KS_ROPE_STYLE_INTERLEAVED && cg->rope_style == KS_ROPE_STYLE_INTERLEAVED,
           "both use interleaved RoPE");
    tap_ok(!strcmp(ks_model_format(mb), "llama2c") && !strcmp(ks_model_format(mg), "gguf"),
           "formats llama2c / gguf");
    tap_ok(!strcmp(ks_model_weight_dtype(mb), "f32") && !strcmp(ks_model_weight_dtype(mg), "f32"),
           "weight dtype f32");
    tap_ok(ks_model_param_count(mb) == 64 * 512 + 5 * (64 + 64 * 64 * 2 + 32 * 64 * 2 + 64 +
                                                       3 * 172 * 64) + 64,
           "param count %zu", ks_model_param_count(mb));
    tap_ok(ks_model_mapped_bytes(mb) == 4 * ks_model_param_count(mb),
           "llama2c weights used from the mapping (%zu bytes)", ks_model_mapped_bytes(mb));
    tap_ok(ks_model_mapped_bytes(mg) > 0, "gguf weights used from the mapping (%zu bytes)",
           ks_model_mapped_bytes(mg));

    int bad = 0;
    bad += !same(mb->tok_embeddings.data, mg->tok_embeddings.data, 512 * 64);
    bad += !same(mb->final_norm, mg->final_norm, 64);
    bad += !same(mb->output.data, mg->output.data, 512 * 64);
    for (int l = 0; l < 5; l++)
        for (int f = 0; f < 9; f++)
            bad += !same(layer_field(&mb->layers[l], f), layer_field(&mg->layers[l], f),
                         layer_field_elems(c, f));
    tap_ok(bad == 0, "every weight bit-identical between .bin and .gguf (%d differ)", bad);

    /* no_mmap: same bytes, none mapped */
    ks_model *mr = NULL;
    ks_model_options o2 = {.tokenizer_path = o.tokenizer_path, .no_mmap = true};
    s = ks_model_open(bin, &o2, &mr, &e);
    tap_ok(s == KS_OK && ks_model_mapped_bytes(mr) == 0 && same(mr->layers[4].w_up.data,
                                                                 mb->layers[4].w_up.data, 172 * 64),
           "no_mmap reads the same weights, nothing mapped");
    ks_model_close(mr);

    const ks_tokenizer *tb = ks_model_tokenizer(mb), *tg = ks_model_tokenizer(mg);
    if (tb && tg) {
        int n = ks_tokenizer_vocab_size(tb);
        int diff = n == ks_tokenizer_vocab_size(tg) ? 0 : 1;
        for (int i = 0; i < n && !diff; i++) {
            char a[64], b[64];
            const char *pa = ks_tokenizer_piece(tb, i), *pg2 = ks_tokenizer_piece(tg, i);
            if (!pa || !pg2) {
                diff++;
                break;
            }
            norm_piece(pa, a, sizeof a);
            norm_piece(pg2, b, sizeof b);
            if (strcmp(a, b)) {
                tap_diag("piece %d: '%s' vs '%s'", i, a, b);
                diff++;
            }
        }
        tap_ok(diff == 0 && n == 512, "GGUF vocabulary equals tok512.bin (512 pieces)");
    } else {
        tap_ok(0, "both models have a tokenizer (bin: %p, gguf: %p)", (void *)tb, (void *)tg);
    }
    ks_model_close(mb);
    ks_model_close(mg);
}


/* ---------------------------------------------------------------- safetensors (written here) */

enum { T_DIM = 8, T_HID = 16, T_LAYERS = 2, T_HEADS = 2, T_KV = 1, T_VOCAB = 16, T_HD = 4 };

typedef struct {
    char name[96];
    int rows, cols; /* rows 0: vector */
    float *ref;     /* expected f32 values */
} st_tensor;

static float tval(int t, int i) { return (float)(((i * 7 + t * 3) % 17) - 8) * 0.125f; }

static int make_tensors(st_tensor *v, bool with_head) {
    int n = 0;
#define ADD(nm, r, c)                                                          \
    do {                                                                       \
        snprintf(v[n].name, sizeof v[n].name, "%s", nm);                       \
        v[n].rows = (r);                                                       \
        v[n].cols = (c);                                                       \
        int cnt = ((r) ? (r) : 1) * (c);                                       \
        v[n].ref = malloc((size_t)cnt * sizeof(float));                        \
        for (int i = 0; i < cnt; i++) v[n].ref[i] = tval(n, i);               \
        n++;                                                                   \
    } while (0)
    ADD("model.embed_tokens.weight", T_VOCAB, T_DIM);
    ADD("model.norm.weight", 0, T_DIM);
    if (with_head) ADD("lm_head.weight", T_VOCAB, T_DIM);
    for (int l = 0; l < T_LAYERS; l++) {
        char b[96];
        static const char *nm[9] = {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                                    "self_attn.v_proj", "self_attn.o_proj",
                                    "post_attention_layernorm", "mlp.gate_proj", "mlp.down_proj",
                                    "mlp.up_proj"};
        int rc[9][2] = {{0, T_DIM}, {T_HEADS * T_HD, T_DIM}, {T_KV * T_HD, T_DIM},
                        {T_KV * T_HD, T_DIM}, {T_DIM, T_HEADS * T_HD}, {0, T_DIM},
                        {T_HID, T_DIM}, {T_DIM, T_HID}, {T_HID, T_DIM}};
        for (int k = 0; k < 9; k++) {
            snprintf(b, sizeof b, "model.layers.%d.%s.weight", l, nm[k]);
            ADD(b, rc[k][0], rc[k][1]);
        }
    }
    ADD("model.layers.0.self_attn.rotary_emb.inv_freq", 0, T_HD / 2);
#undef ADD
    return n;
}

static int t_elems(const st_tensor *t) { return (t->rows ? t->rows : 1) * t->cols; }

/* Write tensors [from, to) as one safetensors file in dtype dt ("F32", "F16", "BF16"). */
static bool write_st(const char *path, st_tensor *v, int from, int to, const char *dt) {
    int esz = !strcmp(dt, "F32") ? 4 : 2;
    char *hdr = malloc(65536);
    size_t o = 0, off = 0;
    o += (size_t)snprintf(hdr + o, 65536 - o, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = from; i < to; i++) {
        size_t nb = (size_t)t_elems(&v[i]) * (size_t)esz;
        if (v[i].rows)
            o += (size_t)snprintf(hdr + o, 65536 - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%d,%d],"
                                  "\"data_offsets\":[%zu,%zu]}", v[i].name, dt, v[i].rows, v[i].cols,
                                  off, off + nb);
        else
            o += (size_t)snprintf(hdr + o, 65536 - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%d],"
                                  "\"data_offsets\":[%zu,%zu]}", v[i].name, dt, v[i].cols, off,
                                  off + nb);
        off += nb;
    }
    hdr[o++] = '}';
    while (o % 8) hdr[o++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(hdr);
        return false;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)o >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(hdr, 1, o, f);
    for (int i = from; i < to; i++)
        for (int j = 0; j < t_elems(&v[i]); j++) {
            uint32_t u;
            memcpy(&u, &v[i].ref[j], 4);
            if (esz == 4) {
                uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
                fwrite(b, 1, 4, f);
            } else {
                uint16_t h;
                if (!strcmp(dt, "BF16")) {
                    h = (uint16_t)(u >> 16); /* values are exact in bf16 */
                } else {
                    /* values are k/8 with |k| <= 8: exact f16 normals (or zero) */
                    float a = fabsf(v[i].ref[j]);
                    if (a == 0.0f) {
                        h = 0;
                    } else {
                        int e;
                        float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
                        h = (uint16_t)(((e - 1 + 15) << 10) | (uint16_t)((m * 2.0f - 1.0f) * 1024.0f));
                    }
                    if (v[i].ref[j] < 0) h |= 0x8000;
                }
                uint8_t b[2] = {(uint8_t)h, (uint8_t)(h >> 8)};
                fwrite(b, 1, 2, f);
            }
        }
    fclose(f);
    free(hdr);
    return true;
}

static bool write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fputs(text, f);
    fclose(f);
    return true;
}

static void write_config(const char *dir, bool tied) {
    char p[4200], cfg[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\","
             " \"_name_or_path\": \"young-geng/koala\", \"hidden_size\": %d, \"intermediate_size\": %d,"
             " \"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d,"
             " \"vocab_size\": %d, \"max_position_embeddings\": 32, \"rms_norm_eps\": 1e-06,"
             " \"rope_theta\": 10000.0, \"tie_word_embeddings\": %s, \"bos_token_id\": 1,"
             " \"eos_token_id\": [2, 3], \"hidden_act\": \"silu\", \"torch_dtype\": \"float16\"}",
             T_DIM, T_HID, T_LAYERS, T_HEADS, T_KV, T_VOCAB, tied ? "true" : "false");
    write_text(p, cfg);
}

/* The values of a named tensor as f32 (malloc'd; matrices converted from their stored dtype
 * by ks_dtype_to_f32, whose conversions are checked bit by bit above). */
static float *model_tensor(const ks_model *m, const char *name, size_t n) {
    int l;
    char rest[64];
    const ks_weight *mat = NULL;
    const float *vec = NULL;
    if (!strcmp(name, "model.embed_tokens.weight")) mat = &m->tok_embeddings;
    else if (!strcmp(name, "model.norm.weight")) vec = m->final_norm;
    else if (!strcmp(name, "lm_head.weight")) mat = &m->output;
    else if (sscanf(name, "model.layers.%d.%63s", &l, rest) == 2 && l >= 0 && l < T_LAYERS) {
        const ks_layer_weights *w = &m->layers[l];
        static const char *nm[9] = {"input_layernorm.weight", "self_attn.q_proj.weight",
                                    "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                    "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                                    "mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight"};
        for (int k = 0; k < 9; k++)
            if (!strcmp(rest, nm[k])) {
                mat = layer_matrix(w, k);
                if (!mat) vec = layer_field(w, k);
            }
    }
    if (!mat && !vec) return NULL;
    float *out = malloc(n * sizeof(float));
    if (vec) memcpy(out, vec, n * sizeof(float));
    else ks_dtype_to_f32(mat->dtype, mat->data, out, n);
    return out;
}

static int compare_model(const ks_model *m, st_tensor *v, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if (strstr(v[i].name, "inv_freq")) continue;
        size_t ne = (size_t)t_elems(&v[i]);
        float *p = model_tensor(m, v[i].name, ne);
        if (!p || memcmp(p, v[i].ref, ne * sizeof(float)) != 0) {
            if (bad < 3) tap_diag("tensor %s differs", v[i].name);
            bad++;
        }
        free(p);
    }
    return bad;
}

static void rm_rf(const char *dir) {
    static const char *files[] = {"config.json", "model.safetensors", "model.safetensors.index.json",
                                  "model-00001-of-00002.safetensors",
                                  "model-00002-of-00002.safetensors"};
    char p[4200];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void test_safetensors(void) {
    char dir[] = "/tmp/ks_test_loaders_XXXXXX";
    if (!mkdtemp(dir)) {
        tap_ok(0, "mkdtemp");
        return;
    }
    char p[4200];
    st_tensor v[64];
    ks_error e = {0};
    ks_model *m = NULL;

    /* F32, tied (no lm_head) */
    int n = make_tensors(v, false);
    write_config(dir, true);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, v, 0, n, "F32");
    ks_status s = ks_model_open(dir, NULL, &m, &e);
    if (tap_ok(s == KS_OK, "HF F32 safetensors (tied) loads (%s)", e.msg)) {
        const ks_config *c = ks_model_config(m);
        tap_ok(c->dim == T_DIM && c->hidden_dim == T_HID && c->n_layers == T_LAYERS &&
                   c->n_heads == T_HEADS && c->n_kv_heads == T_KV && c->head_dim == T_HD &&
                   c->vocab_size == T_VOCAB && c->max_seq_len == 32 && c->tie_embeddings &&
                   c->bos_id == 1 && c->eos_id == 2 && c->rope_style == KS_ROPE_STYLE_HALF &&
                   fabsf(c->rms_eps - 1e-6f) < 1e-12f && c->rope_theta == 10000.0f,
               "HF config read (eos list -> first, rope style half, tied)");
        tap_ok(compare_model(m, v, n) == 0 && m->output.data == m->tok_embeddings.data, "F32 values exact");
        tap_ok(ks_model_mapped_bytes(m) > 0 && !strcmp(ks_model_weight_dtype(m), "f32") &&
                   !strcmp(ks_model_format(m), "hf-safetensors") && ks_model_tokenizer(m) == NULL,
               "F32 mapped (%zu bytes), format hf-safetensors, no tokenizer file -> none",
               ks_model_mapped_bytes(m));
        tap_ok(!strcmp(ks_model_template_hint(m), "koala"), "template hint from _name_or_path: %s",
               ks_model_template_hint(m));
    }
    ks_model_close(m);
    m = NULL;
    /* the same directory opened through the .safetensors file */
    s = ks_model_open(p, NULL, &m, &e);
    tap_ok(s == KS_OK, "opening model.safetensors opens its directory (%s)", e.msg);
    ks_model_close(m);
    m = NULL;
    for (int i = 0; i < n; i++) free(v[i].ref);

    /* F16, untied */
    n = make_tensors(v, true);
    write_config(dir, false);
    write_st(p, v, 0, n, "F16");
    s = ks_model_open(dir, NULL, &m, &e);
    if (tap_ok(s == KS_OK, "HF F16 safetensors (untied) loads (%s)", e.msg)) {
        tap_ok(compare_model(m, v, n) == 0 && m->output.data != m->tok_embeddings.data &&
                   !ks_model_config(m)->tie_embeddings,
               "F16 values exact, separate lm_head");
        tap_ok(ks_model_mapped_bytes(m) > 0 && m->layers[0].wq.dtype == KS_DTYPE_F16 &&
                   !strcmp(ks_model_weight_dtype(m), "f16"),
               "F16 matrices used in place from the mapping (%zu bytes)", ks_model_mapped_bytes(m));
    }
    ks_model_close(m);
    m = NULL;
    ks_model_options f32o = {.f32_weights = true};
    s = ks_model_open(dir, &f32o, &m, &e);
    if (tap_ok(s == KS_OK, "HF F16 with f32_weights loads (%s)", e.msg))
        tap_ok(compare_model(m, v, n) == 0 && ks_model_mapped_bytes(m) == 0 &&
                   m->layers[0].wq.dtype == KS_DTYPE_F32,
               "f32_weights converts every matrix into owned f32 buffers, same values");
    ks_model_close(m);
    m = NULL;
    unlink(p);

    /* BF16, sharded with an index */
    char p1[4200], p2[4200], pi[4200], idx[16384];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(pi, sizeof pi, "%s/model.safetensors.index.json", dir);
    int half = n / 2;
    write_st(p1, v, 0, half, "BF16");
    write_st(p2, v, half, n, "BF16");
    size_t o = (size_t)snprintf(idx, sizeof idx, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(idx + o, sizeof idx - o, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
                              i ? ", " : "", v[i].name, i < half ? 1 : 2);
    snprintf(idx + o, sizeof idx - o, "}}");
    write_text(pi, idx);
    s = ks_model_open(dir, NULL, &m, &e);
    if (tap_ok(s == KS_OK, "HF BF16 sharded safetensors loads (%s)", e.msg))
        tap_ok(compare_model(m, v, n) == 0 && !strcmp(ks_model_weight_dtype(m), "bf16"),
               "BF16 shards: values exact, dtype %s", ks_model_weight_dtype(m));
    ks_model_close(m);
    m = NULL;

    /* an index that names the wrong shard for one tensor is refused */
    char *swap = strstr(idx, "model-00001-of-00002");
    swap[10] = '2';
    write_text(pi, idx);
    s = ks_model_open(dir, NULL, &m, &e);
    tap_ok(s == KS_ERR_FORMAT && strstr(e.msg, "weight_map"), "index naming the wrong shard refused: %s",
           e.msg);
    ks_model_close(m);
    for (int i = 0; i < n; i++) free(v[i].ref);
    rm_rf(dir);
}

/* The vocab-only GGUF of llama.cpp ends right after its metadata (0 tensors, no padding). */
static void test_vocab_only_gguf(void) {
    char pb[4096];
    const char *p = ks_test_data_file("llama-tokenizer/ggml-vocab-llama-spm.gguf", pb, sizeof pb);
    if (!p) return;
    ks_tokenizer *tok = NULL;
    ks_error e = {0};
    ks_status s = ks_gguf_open_tokenizer(p, &tok, &e);
    if (tap_ok(s == KS_OK && tok, "vocab-only GGUF opens as a tokenizer (%s)", e.msg)) {
        const char *p1 = ks_tokenizer_piece(tok, 1), *p259 = ks_tokenizer_piece(tok, 259);
        tap_ok(ks_tokenizer_vocab_size(tok) == 32000 && ks_tokenizer_bos(tok) == 1 &&
                   ks_tokenizer_eos(tok) == 2 && p1 && !strcmp(p1, "<s>") && p259 &&
                   !strcmp(p259, "\xe2\x96\x81\xe2\x96\x81"),
               "32000 pieces, bos 1, eos 2, piece 259 = '\u2581\u2581' (%s)", p259 ? p259 : "?");
    }
    ks_tokenizer_free(tok);
    ks_model *m = NULL;
    s = ks_model_open(p, NULL, &m, &e);
    tap_ok(s == KS_ERR_FORMAT && strstr(e.msg, "no tensors") && strstr(e.msg, "tokenizer"),
           "as a model it is refused: %s", e.msg);
    ks_model_close(m);
}

int main(void) {
    test_f16();
    test_bf16();
    test_q8_0();
    test_q4_0();
    test_q4_k();
    test_nbytes();
    test_stories();
    test_safetensors();
    test_vocab_only_gguf();
    return tap_done();
}
