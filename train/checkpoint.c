/* checkpoint.c — a training run saved as an HF checkpoint directory, and resumed from one.
 *
 * Layout (docs/FINETUNE.md): config.json, model.safetensors (F32 or BF16, HF names and
 * layout), the tokenizer (the input's files copied, or tokenizer.model written from our
 * tokenizer), tokenizer_config.json, and for resuming optimizer.safetensors (AdamW moments
 * "exp_avg.<name>" / "exp_avg_sq.<name>", LoRA factors "lora.<name>", f32 master weights
 * "master.<name>" when the model is saved in bf16) and trainer_state.json (step, epoch, data
 * position, seed, losses, learning rates, gradient norms, fingerprint of data and options).
 *
 * HF rotates (i, i + d/2) pairs where llama2.c and GGUF rotate (2i, 2i + 1): q/k rows of
 * interleaved models are permuted on the way out (and back on resume), as transformers'
 * convert_llama_weights_to_hf does.
 *
 * A directory is written under "<dir>.tmp-<pid>", every file synced, then renamed into place
 * (an older dir of that name is moved aside and removed after), so a kill at any moment
 * leaves either the old checkpoint or the new one, never half of one. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_private.h"
#include "train_private.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint.c writes safetensors (little-endian) with memcpy"
#endif

/* ------------------------------------------------------------------ files */

static ks_status write_all(const char *path, const void *a, size_t na, const void *b, size_t nb,
                           ks_error *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ks_error_set(err, KS_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    const void *parts[2] = {a, b};
    size_t lens[2] = {na, nb};
    for (int k = 0; k < 2; k++) {
        const char *p = parts[k];
        size_t left = lens[k];
        while (left > 0) {
            ssize_t w = write(fd, p, left > (1u << 30) ? (1u << 30) : left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                int e = errno;
                close(fd);
                return ks_error_set(err, KS_ERR_IO, "%s: write failed: %s", path, strerror(e));
            }
            p += w;
            left -= (size_t)w;
        }
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        return ks_error_set(err, KS_ERR_IO, "%s: cannot sync: %s", path, strerror(errno));
    return KS_OK;
}

static ks_status write_json(const char *path, json_t *j, ks_error *err) {
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    if (!s) return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
    ks_status st = write_all(path, s, strlen(s), "\n", 1, err);
    free(s);
    return st;
}

static ks_status read_all(const char *path, char **out, size_t *len, ks_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0) {
        fclose(f);
        return ks_error_set(err, KS_ERR_IO, "%s: cannot stat", path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return ks_error_set(err, KS_ERR_IO, "%s: short read", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return KS_OK;
}

static ks_status copy_file(const char *from, const char *to, ks_error *err) {
    char *buf;
    size_t n;
    ks_status st = read_all(from, &buf, &n, err);
    if (st) return st;
    st = write_all(to, buf, n, NULL, 0, err);
    free(buf);
    return st;
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static ks_status remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return KS_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
    return KS_OK;
}

/* ------------------------------------------------------------------ safetensors */

typedef struct {
    const char *name;
    const float *data; /* f32 values */
    int64_t shape[2];
    int ndim;
    bool bf16;
} st_tensor;

/* The q/k permutation between interleaved (Meta/GGUF) rows and HF's rotate-half rows, per
 * head: HF row h*hd + half*i2 + j holds interleaved row h*hd + 2j + i2. to_hf false inverts. */
static void permute_rows(float *dst, const float *src, int heads, int hd, int cols, bool to_hf) {
    int half = hd / 2;
    for (int h = 0; h < heads; h++)
        for (int j = 0; j < half; j++)
            for (int i2 = 0; i2 < 2; i2++) {
                size_t hf = (size_t)h * hd + (size_t)i2 * half + j, il = (size_t)h * hd + 2 * j + i2;
                size_t d = to_hf ? hf : il, s = to_hf ? il : hf;
                memcpy(dst + d * cols, src + s * cols, (size_t)cols * sizeof(float));
            }
}

static ks_status write_safetensors(const char *path, const st_tensor *v, int n, ks_error *err) {
    json_t *hdr = json_object();
    json_t *meta = json_pack("{s:s}", "format", "pt");
    size_t off = 0;
    ks_status st = KS_OK;
    for (int i = 0; i < n; i++) {
        size_t cnt = (size_t)v[i].shape[0] * (size_t)(v[i].ndim == 2 ? v[i].shape[1] : 1);
        size_t bytes = cnt * (v[i].bf16 ? 2 : 4);
        json_t *shape = v[i].ndim == 2 ? json_pack("[I,I]", (json_int_t)v[i].shape[0], (json_int_t)v[i].shape[1])
                                       : json_pack("[I]", (json_int_t)v[i].shape[0]);
        json_object_set_new(hdr, v[i].name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", v[i].bf16 ? "BF16" : "F32", "shape",
                                      shape, "data_offsets", (json_int_t)off, (json_int_t)(off + bytes)));
        off += bytes;
    }
    json_object_set_new(hdr, "__metadata__", meta);
    char *h = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(hdr);
    if (!h) return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
    size_t hl = strlen(h), padded = (hl + 7) & ~(size_t)7;
    size_t total = 8 + padded + off;
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(h);
        return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory (%zu bytes)", path, total);
    }
    uint64_t h64 = padded;
    memcpy(buf, &h64, 8);
    memcpy(buf + 8, h, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    free(h);
    uint8_t *p = buf + 8 + padded;
    for (int i = 0; i < n; i++) {
        size_t cnt = (size_t)v[i].shape[0] * (size_t)(v[i].ndim == 2 ? v[i].shape[1] : 1);
        if (v[i].bf16) {
            ks_f32_to_bf16(v[i].data, (uint16_t *)(void *)p, cnt); /* p is 2-aligned: every size is even */
            p += 2 * cnt;
        } else {
            memcpy(p, v[i].data, cnt * 4);
            p += 4 * cnt;
        }
    }
    st = write_all(path, buf, total, NULL, 0, err);
    free(buf);
    return st;
}

/* A safetensors file of ours read back: F32 tensors by name (validated as untrusted). */
typedef struct {
    char *buf;
    size_t len;
    json_t *hdr;
    size_t data0;
    const char *path;
} st_file;

static ks_status st_open(st_file *f, const char *path, ks_error *err) {
    memset(f, 0, sizeof *f);
    f->path = path;
    ks_status st = read_all(path, &f->buf, &f->len, err);
    if (st) return st;
    uint64_t hl = 0;
    if (f->len < 8 || (memcpy(&hl, f->buf, 8), hl > f->len - 8))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: not a safetensors file (header length)", path);
    json_error_t je;
    f->hdr = json_loadb(f->buf + 8, (size_t)hl, 0, &je);
    if (!json_is_object(f->hdr))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: safetensors header is not a JSON object", path);
    f->data0 = 8 + (size_t)hl;
    return KS_OK;
}

static void st_close(st_file *f) {
    json_decref(f->hdr);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

/* Copy tensor name (F32, n elements) into dst. */
static ks_status st_get(const st_file *f, const char *name, float *dst, size_t n, ks_error *err) {
    json_t *t = json_object_get(f->hdr, name);
    if (!json_is_object(t)) return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s' is missing", f->path, name);
    json_t *dt = json_object_get(t, "dtype"), *off = json_object_get(t, "data_offsets");
    if (!json_is_string(dt) || strcmp(json_string_value(dt), "F32") != 0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': dtype is not F32", f->path, name);
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
        !json_is_integer(json_array_get(off, 1)))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': bad data_offsets", f->path, name);
    json_int_t a = json_integer_value(json_array_get(off, 0)), b = json_integer_value(json_array_get(off, 1));
    if (a < 0 || b < a || (uint64_t)(b - a) != n * 4 || (uint64_t)b > f->len - f->data0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': %lld bytes, expected %zu", f->path,
                            name, (long long)(b - a), n * 4);
    memcpy(dst, f->buf + f->data0 + a, n * 4);
    return KS_OK;
}

/* ------------------------------------------------------------------ config.json */

static json_t *config_json(const ks_model *m, const char *template_name, bool bf16) {
    const ks_config *c = ks_model_config(m);
    json_t *j = json_object();
    json_object_set_new(j, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(j, "model_type", json_string("llama"));
    char nm[64];
    snprintf(nm, sizeof nm, "koalascope-finetune-%s", template_name ? template_name : "plain");
    json_object_set_new(j, "_name_or_path", json_string(nm));
    json_object_set_new(j, "hidden_size", json_integer(c->dim));
    json_object_set_new(j, "intermediate_size", json_integer(c->hidden_dim));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_seq_len));
    json_object_set_new(j, "rms_norm_eps", json_real(c->rms_eps));
    json_object_set_new(j, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "attention_bias", json_false());
    json_object_set_new(j, "mlp_bias", json_false());
    json_object_set_new(j, "attention_dropout", json_real(0.0));
    json_object_set_new(j, "initializer_range", json_real(0.02));
    json_object_set_new(j, "pretraining_tp", json_integer(1));
    json_object_set_new(j, "use_cache", json_true());
    json_object_set_new(j, "torch_dtype", json_string(bf16 ? "bfloat16" : "float32"));
    json_object_set_new(j, "bos_token_id", c->bos_id >= 0 ? json_integer(c->bos_id) : json_null());
    json_object_set_new(j, "eos_token_id", c->eos_id >= 0 ? json_integer(c->eos_id) : json_null());
    json_t *rs = json_null();
    switch (c->rope_scaling) {
    case KS_ROPE_SCALING_NONE: break;
    case KS_ROPE_SCALING_LINEAR:
        rs = json_pack("{s:s,s:s,s:f}", "type", "linear", "rope_type", "linear", "factor", (double)c->rope_factor);
        break;
    case KS_ROPE_SCALING_DYNAMIC:
        rs = json_pack("{s:s,s:s,s:f}", "type", "dynamic", "rope_type", "dynamic", "factor", (double)c->rope_factor);
        break;
    case KS_ROPE_SCALING_LLAMA3:
        rs = json_pack("{s:s,s:f,s:f,s:f,s:i}", "rope_type", "llama3", "factor", (double)c->rope_factor,
                       "low_freq_factor", (double)c->rope_low_freq_factor, "high_freq_factor",
                       (double)c->rope_high_freq_factor, "original_max_position_embeddings",
                       c->rope_orig_max_pos);
        break;
    }
    json_object_set_new(j, "rope_scaling", rs);
    return j;
}

/* ------------------------------------------------------------------ tokenizer files */

static ks_status write_tokenizer(const ks_model *m, const char *dir, const char *src_dir, ks_error *err) {
    char to[4096], from[4096];
    static const char *const copied[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                                         "special_tokens_map.json", "added_tokens.json"};
    bool any = false;
    if (src_dir) {
        for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++) {
            snprintf(from, sizeof from, "%s/%s", src_dir, copied[i]);
            if (!is_file(from)) continue;
            snprintf(to, sizeof to, "%s/%s", dir, copied[i]);
            ks_status st = copy_file(from, to, err);
            if (st) return st;
            any |= i < 2;
        }
        if (any) return KS_OK;
    }
    const ks_tokenizer *tok = ks_model_tokenizer(m);
    if (!tok) return KS_OK; /* a model without a tokenizer (pre-tokenized training) */
    snprintf(to, sizeof to, "%s/tokenizer.model", dir);
    ks_status st = ks_tokenizer_save_spm(tok, to, err);
    if (st) return st;
    /* HF's slow LlamaTokenizer reads tokenizer.model with SentencePiece alone; legacy keeps
     * SentencePiece's own handling of the dummy prefix (what our tokenizer does) */
    int bos = ks_tokenizer_bos(tok), eos = ks_tokenizer_eos(tok);
    const char *bp = bos >= 0 ? ks_tokenizer_piece(tok, bos) : NULL;
    const char *ep = eos >= 0 ? ks_tokenizer_piece(tok, eos) : NULL;
    const char *up = ks_tokenizer_piece(tok, 0);
    json_t *tc = json_pack("{s:s,s:b,s:b,s:b,s:s?,s:s?,s:s?,s:n,s:b}", "tokenizer_class", "LlamaTokenizer",
                           "legacy", 1, "add_bos_token", 1, "add_eos_token", 0, "bos_token", bp,
                           "eos_token", ep, "unk_token", up, "pad_token", "clean_up_tokenization_spaces", 0);
    json_t *sm = json_pack("{s:s?,s:s?,s:s?}", "bos_token", bp, "eos_token", ep, "unk_token", up);
    snprintf(to, sizeof to, "%s/tokenizer_config.json", dir);
    st = write_json(to, tc, err);
    snprintf(to, sizeof to, "%s/special_tokens_map.json", dir);
    if (!st) st = write_json(to, sm, err);
    json_decref(tc);
    json_decref(sm);
    return st;
}

/* ------------------------------------------------------------------ save */

/* The model's tensors in HF layout; *owned gets buffers to free (permuted copies). */
static ks_status model_tensors(const ks_trainer *t, bool bf16, st_tensor **out, int *n_out,
                               float ***owned, int *n_owned, ks_error *err) {
    const ks_model *m = t->m;
    const ks_config *c = ks_model_config(m);
    int n = ks_model_tensor_count(m);
    st_tensor *v = calloc((size_t)n, sizeof *v);
    float **own = calloc((size_t)n, sizeof *own);
    char(*names)[96] = calloc((size_t)n, sizeof *names);
    if (!v || !own || !names) {
        free(v);
        free(own);
        free(names);
        return ks_error_set(err, KS_ERR_NOMEM, "checkpoint: out of memory");
    }
    int no = 0;
    for (int i = 0; i < n; i++) {
        ks_model_tensor_info(m, i, names[i], sizeof names[i], v[i].shape, &v[i].ndim);
        v[i].name = names[i];
        v[i].bf16 = bf16;
        size_t cnt = 0;
        v[i].data = ks_model_param(m, names[i], &cnt);
        bool q = strstr(names[i], "q_proj") != NULL, k = strstr(names[i], "k_proj") != NULL;
        if (c->rope_style == KS_ROPE_STYLE_INTERLEAVED && (q || k)) {
            float *p = malloc(cnt * sizeof(float));
            if (!p) {
                for (int j = 0; j < no; j++) free(own[j]);
                free(own);
                free(v);
                free(names);
                return ks_error_set(err, KS_ERR_NOMEM, "checkpoint: out of memory");
            }
            permute_rows(p, v[i].data, q ? c->n_heads : c->n_kv_heads, c->head_dim, c->dim, true);
            v[i].data = p;
            own[no++] = p;
        }
    }
    own[no] = (float *)names; /* freed with the rest */
    *out = v;
    *n_out = n;
    *owned = own;
    *n_owned = no + 1;
    return KS_OK;
}

static json_t *hist(const double *h, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, isfinite(h[i]) ? json_real(h[i]) : json_null());
    return a;
}

static ks_status write_state(const ks_trainer *t, const char *dir, const ks_checkpoint_options *o,
                             ks_error *err) {
    char path[4096];
    /* optimizer.safetensors: moments of every trainable tensor, LoRA factors, master weights */
    int cap = 3 * t->n_tr + ks_model_tensor_count(t->m) + 1;
    st_tensor *v = calloc((size_t)cap, sizeof *v);
    char(*names)[128] = calloc((size_t)cap, sizeof *names);
    if (!v || !names) {
        free(v);
        free(names);
        return ks_error_set(err, KS_ERR_NOMEM, "checkpoint: out of memory");
    }
    int n = 0;
    for (int i = 0; i < t->n_tr; i++) {
        const trainable *x = &t->tr[i];
        const float *arrays[3] = {x->st.m, x->st.v, t->n_lora ? x->p : NULL};
        static const char *const pre[3] = {"exp_avg.", "exp_avg_sq.", "lora."};
        for (int k = 0; k < 3; k++) {
            if (!arrays[k]) continue;
            snprintf(names[n], sizeof names[n], "%s%s", pre[k], x->name);
            v[n] = (st_tensor){names[n], arrays[k], {x->shape[0], x->shape[1]}, x->ndim, false};
            n++;
        }
    }
    if (o->bf16 && !t->n_lora) {
        int nt = ks_model_tensor_count(t->m);
        for (int i = 0; i < nt; i++) {
            char nm[96];
            int64_t sh[2];
            int nd;
            ks_model_tensor_info(t->m, i, nm, sizeof nm, sh, &nd);
            snprintf(names[n], sizeof names[n], "master.%s", nm);
            v[n] = (st_tensor){names[n], ks_model_param(t->m, nm, NULL), {sh[0], sh[1]}, nd, false};
            n++;
        }
    }
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    ks_status st = write_safetensors(path, v, n, err);
    free(v);
    free(names);
    if (st) return st;

    json_t *j = json_object();
    json_object_set_new(j, "format", json_string("koalascope-trainer-state"));
    json_object_set_new(j, "version", json_integer(1));
    json_object_set_new(j, "step", json_integer(t->step));
    json_object_set_new(j, "total_steps", json_integer(t->total));
    json_object_set_new(j, "steps_per_epoch", json_integer(t->spe));
    json_object_set_new(j, "epoch", json_integer(t->step / t->spe));
    /* the next sequence of the epoch's order that the next step starts at */
    int pos = (t->step % t->spe) * t->o.batch * t->o.grad_accum;
    json_object_set_new(j, "data_position", json_integer(pos));
    json_object_set_new(j, "n_sequences", json_integer(t->n_seqs));
    json_object_set_new(j, "seed", json_integer((json_int_t)t->o.seed));
    json_object_set_new(j, "rng", json_string("xoshiro256** seeded by splitmix64(seed * 1000003 + "
                                              "1 + epoch) per epoch's order: no state to carry"));
    json_object_set_new(j, "fingerprint", json_string(t->fingerprint));
    json_object_set_new(j, "master_weights", json_string(o->bf16 && !t->n_lora ? "optimizer.safetensors"
                                                                               : "model.safetensors"));
    json_object_set_new(j, "losses", hist(t->loss_hist, t->step));
    json_object_set_new(j, "learning_rates", hist(t->lr_hist, t->step));
    json_object_set_new(j, "grad_norms", hist(t->norm_hist, t->step));
    json_t *run = NULL;
    if (o->run_json) {
        run = json_loads(o->run_json, 0, NULL);
        if (!json_is_object(run)) {
            json_decref(run);
            json_decref(j);
            return ks_error_set(err, KS_ERR_ARG, "checkpoint: run_json is not a JSON object");
        }
    }
    json_object_set_new(j, "run", run ? run : json_object());
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    st = write_json(path, j, err);
    json_decref(j);
    return st;
}

ks_status ks_trainer_save(const ks_trainer *t, const char *dir, const ks_checkpoint_options *o,
                          ks_error *err) {
    if (!t || !dir || !o) return ks_error_set(err, KS_ERR_ARG, "ks_trainer_save: NULL argument");
    if (strlen(dir) > 3000 || (o->tokenizer_dir && strlen(o->tokenizer_dir) > 3000))
        return ks_error_set(err, KS_ERR_ARG, "%.64s...: path too long", dir);
    char tmp[4096], old[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", dir, (long)getpid());
    snprintf(old, sizeof old, "%s.old-%ld", dir, (long)getpid());
    remove_tree(tmp);
    if (mkdir(tmp, 0755) != 0)
        return ks_error_set(err, KS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    ks_status st;
    st_tensor *v = NULL;
    float **owned = NULL;
    int n = 0, no = 0;
    json_t *cfg = config_json(t->m, o->template_name, o->bf16);
    snprintf(path, sizeof path, "%s/config.json", tmp);
    st = write_json(path, cfg, err);
    json_decref(cfg);
    if (!st) st = model_tensors(t, o->bf16, &v, &n, &owned, &no, err);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    if (!st) st = write_safetensors(path, v, n, err);
    for (int i = 0; i < no; i++) free(owned[i]);
    free(owned);
    free(v);
    if (!st) st = write_tokenizer(t->m, tmp, o->tokenizer_dir, err);
    if (!st && o->with_state) st = write_state(t, tmp, o, err);
    if (!st) {
        /* the directory entry itself, then into place */
        int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
        struct stat sb;
        bool had = stat(dir, &sb) == 0;
        if (had && rename(dir, old) != 0)
            st = ks_error_set(err, KS_ERR_IO, "%s: cannot move aside: %s", dir, strerror(errno));
        else if (rename(tmp, dir) != 0)
            st = ks_error_set(err, KS_ERR_IO, "%s: cannot rename to %s: %s", tmp, dir, strerror(errno));
        if (had) remove_tree(old);
        /* and the parent, so the rename is durable */
        char parent[4096];
        snprintf(parent, sizeof parent, "%s", dir);
        char *slash = strrchr(parent, '/');
        if (slash) *slash = '\0'; else snprintf(parent, sizeof parent, ".");
        if ((fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
            fsync(fd);
            close(fd);
        }
    }
    if (st) remove_tree(tmp);
    return st;
}

/* ------------------------------------------------------------------ restore */

static ks_status read_state_json(const char *dir, json_t **out, ks_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) return ks_error_set(err, KS_ERR_FORMAT, "%s:%d: %s", path, je.line, je.text);
    json_t *f = json_object_get(j, "format");
    if (!json_is_string(f) || strcmp(json_string_value(f), "koalascope-trainer-state") != 0 ||
        !json_is_integer(json_object_get(j, "step"))) {
        json_decref(j);
        return ks_error_set(err, KS_ERR_FORMAT, "%s: not a koalascope trainer state (format, step)", path);
    }
    *out = j;
    return KS_OK;
}

ks_status ks_checkpoint_read_run(const char *dir, char **run_json, int *step, ks_error *err) {
    json_t *j = NULL;
    ks_status st = read_state_json(dir, &j, err);
    if (st) return st;
    if (step) *step = (int)json_integer_value(json_object_get(j, "step"));
    if (run_json) {
        json_t *run = json_object_get(j, "run");
        *run_json = json_is_object(run) ? json_dumps(run, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
    }
    json_decref(j);
    return KS_OK;
}

static ks_status read_hist(json_t *j, const char *key, double *dst, int n, const char *dir, ks_error *err) {
    json_t *a = json_object_get(j, key);
    if (!json_is_array(a) || (int)json_array_size(a) != n)
        return ks_error_set(err, KS_ERR_FORMAT, "%s/trainer_state.json: %s: not a list of %d numbers", dir, key, n);
    for (int i = 0; i < n; i++) {
        json_t *x = json_array_get(a, (size_t)i);
        if (json_is_null(x)) dst[i] = NAN;
        else if (json_is_number(x)) dst[i] = json_number_value(x);
        else return ks_error_set(err, KS_ERR_FORMAT, "%s/trainer_state.json: %s[%d]: not a number", dir, key, i);
    }
    return KS_OK;
}

ks_status ks_trainer_restore(ks_trainer *t, const char *dir, ks_error *err) {
    if (strlen(dir) > 3000) return ks_error_set(err, KS_ERR_ARG, "%.64s...: path too long", dir);
    json_t *j = NULL;
    ks_status st = read_state_json(dir, &j, err);
    if (st) return st;
    st_file opt = {0}, mod = {0};
    char path[4096], opath[4096];
    int step = (int)json_integer_value(json_object_get(j, "step"));
    json_t *fp = json_object_get(j, "fingerprint");
    const ks_config *c = ks_model_config(t->m);
    if (!json_is_string(fp) || strcmp(json_string_value(fp), t->fingerprint) != 0) {
        st = ks_error_set(err, KS_ERR_ARG, "%s: this checkpoint was written by a run with other data, "
                          "options or model (fingerprint %s, this run %s)", dir,
                          json_is_string(fp) ? json_string_value(fp) : "?", t->fingerprint);
        goto out;
    }
    if (step < 0 || step > t->total) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s/trainer_state.json: step %d out of range", dir, step);
        goto out;
    }
    if ((st = read_hist(j, "losses", t->loss_hist, step, dir, err)) ||
        (st = read_hist(j, "learning_rates", t->lr_hist, step, dir, err)) ||
        (st = read_hist(j, "grad_norms", t->norm_hist, step, dir, err)))
        goto out;
    snprintf(opath, sizeof opath, "%s/optimizer.safetensors", dir);
    if ((st = st_open(&opt, opath, err))) goto out;
    for (int i = 0; i < t->n_tr && !st; i++) {
        trainable *x = &t->tr[i];
        char nm[160];
        snprintf(nm, sizeof nm, "exp_avg.%s", x->name);
        if ((st = st_get(&opt, nm, x->st.m, x->n, err))) break;
        snprintf(nm, sizeof nm, "exp_avg_sq.%s", x->name);
        if ((st = st_get(&opt, nm, x->st.v, x->n, err))) break;
        if (t->n_lora) {
            snprintf(nm, sizeof nm, "lora.%s", x->name);
            st = st_get(&opt, nm, x->p, x->n, err);
        }
    }
    if (st) goto out;
    if (t->n_lora) {
        ks_trainer_lora_merge(t); /* W0 is the base model's, as at the start */
    } else {
        json_t *mw = json_object_get(j, "master_weights");
        bool master = json_is_string(mw) && !strcmp(json_string_value(mw), "optimizer.safetensors");
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        const st_file *src = &opt;
        if (!master) {
            if ((st = st_open(&mod, path, err))) goto out;
            src = &mod;
        }
        for (int i = 0; i < t->n_tr && !st; i++) {
            trainable *x = &t->tr[i];
            char nm[160];
            snprintf(nm, sizeof nm, "%s%s", master ? "master." : "", x->name);
            bool q = strstr(x->name, "q_proj") != NULL, k = strstr(x->name, "k_proj") != NULL;
            if (!master && c->rope_style == KS_ROPE_STYLE_INTERLEAVED && (q || k)) {
                float *tmp = malloc(x->n * sizeof(float));
                if (!tmp) {
                    st = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
                    break;
                }
                if (!(st = st_get(src, nm, tmp, x->n, err)))
                    permute_rows(x->p, tmp, q ? c->n_heads : c->n_kv_heads, c->head_dim, c->dim, false);
                free(tmp);
            } else {
                st = st_get(src, nm, x->p, x->n, err);
            }
        }
        if (st) goto out;
    }
    t->step = step;
out:
    st_close(&opt);
    st_close(&mod);
    json_decref(j);
    return st;
}
