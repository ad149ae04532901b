/* hf.c — Hugging Face checkpoint directories: config.json (LlamaForCausalLM), the weights in
 * model.safetensors or in shards listed by model.safetensors.index.json, and a tokenizer
 * (tokenizer.model, else tokenizer.json). PyTorch pickles (pytorch_model*.bin) are refused:
 * nothing is ever unpickled.
 *
 * HF's conversion script permuted q/k so that RoPE rotates (i, i + head_dim/2); we keep that
 * layout (cfg.rope_style = KS_ROPE_STYLE_HALF) and leave the weights mapped. */
#include "model_private.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HF_MAX_JSON (64u << 20)
#define HF_MAX_INT (1 << 30)

/* ---------------------------------------------------------------- config.json */

/* Integer field: absent → default (def_ok) or error; must be an integer in 1..HF_MAX_INT
 * (0.. when allow_zero). */
static ks_status cfg_int(json_t *root, const char *source, const char *key, bool required, int def,
                         int *out, ks_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: field '%s' is missing", source, key);
        *out = def;
        return KS_OK;
    }
    if (!json_is_integer(v))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: field '%s' is not an integer", source, key);
    json_int_t i = json_integer_value(v);
    if (i <= 0 || i > HF_MAX_INT)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: field '%s' = %lld is out of range (1..%d)",
                            source, key, (long long)i, HF_MAX_INT);
    *out = (int)i;
    return KS_OK;
}

static ks_status cfg_num(json_t *root, const char *source, const char *key, double def,
                         float *out, ks_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = (float)def;
        return KS_OK;
    }
    if (!json_is_number(v))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: field '%s' is not a number", source, key);
    double d = json_number_value(v);
    if (!isfinite(d) || d <= 0 || d > 3.0e38)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: field '%s' = %g is out of range", source, key, d);
    *out = (float)d;
    return KS_OK;
}

/* Token id: integer, null (none) or, for eos, a list whose first entry is used. */
static ks_status cfg_token(json_t *root, const char *source, const char *key, int *out,
                           ks_error *err) {
    json_t *v = json_object_get(root, key);
    *out = -1;
    if (!v || json_is_null(v)) return KS_OK;
    if (json_is_array(v)) {
        if (json_array_size(v) == 0) return KS_OK;
        v = json_array_get(v, 0);
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > HF_MAX_INT)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: field '%s' is not a token id", source, key);
    *out = (int)json_integer_value(v);
    return KS_OK;
}

static ks_status cfg_bool_false(json_t *root, const char *source, const char *key, ks_error *err) {
    json_t *v = json_object_get(root, key);
    if (v && json_is_true(v))
        return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: field '%s' is true: biases are not "
                            "supported", source, key);
    return KS_OK;
}

static ks_status parse_rope_scaling(json_t *root, const char *source, ks_config *c, ks_error *err) {
    json_t *rs = json_object_get(root, "rope_scaling");
    if (!rs || json_is_null(rs)) return KS_OK;
    if (!json_is_object(rs))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: field 'rope_scaling' is not an object", source);
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    if (!json_is_string(t))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: field 'rope_scaling.type' is missing or not a "
                            "string", source);
    const char *ty = json_string_value(t);
    ks_status s;
    if (!strcmp(ty, "default")) return KS_OK;
    if (!strcmp(ty, "linear"))
        c->rope_scaling = KS_ROPE_SCALING_LINEAR;
    else if (!strcmp(ty, "dynamic"))
        c->rope_scaling = KS_ROPE_SCALING_DYNAMIC;
    else if (!strcmp(ty, "llama3"))
        c->rope_scaling = KS_ROPE_SCALING_LLAMA3;
    else
        return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: field 'rope_scaling.type' = '%.32s' is not "
                            "supported (linear, dynamic, llama3)", source, ty);
    json_t *f = json_object_get(rs, "factor");
    if (!json_is_number(f) || !(json_number_value(f) > 0) || !isfinite(json_number_value(f)) ||
        json_number_value(f) > 1e6)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: field 'rope_scaling.factor' is missing or not a "
                            "positive number", source);
    c->rope_factor = (float)json_number_value(f);
    c->rope_orig_max_pos = c->max_seq_len;
    if (c->rope_scaling == KS_ROPE_SCALING_LLAMA3) {
        if ((s = cfg_num(rs, source, "low_freq_factor", 1.0, &c->rope_low_freq_factor, err)) ||
            (s = cfg_num(rs, source, "high_freq_factor", 4.0, &c->rope_high_freq_factor, err)) ||
            (s = cfg_int(rs, source, "original_max_position_embeddings", true, 0,
                         &c->rope_orig_max_pos, err)))
            return s;
    }
    return KS_OK;
}

ks_status ks_hf_config_parse(const char *json, size_t len, const char *source, ks_config *c,
                             char hint[16], ks_error *err) {
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: not valid JSON: %s (line %d)", source, je.text,
                            je.line);
    ks_status s = KS_OK;
    memset(c, 0, sizeof *c);
    c->bos_id = c->eos_id = -1;
    if (hint) snprintf(hint, 16, "plain");
    if (!json_is_object(root)) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: not a JSON object", source);
        goto out;
    }
    json_t *mt = json_object_get(root, "model_type"), *ar = json_object_get(root, "architectures");
    const char *arch = json_is_array(ar) && json_is_string(json_array_get(ar, 0))
                           ? json_string_value(json_array_get(ar, 0))
                           : NULL;
    if (mt && !json_is_string(mt)) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: field 'model_type' is not a string", source);
        goto out;
    }
    if (mt && strcmp(json_string_value(mt), "llama") != 0) {
        s = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: field 'model_type' = '%.32s' is not supported "
                         "(only 'llama')", source, json_string_value(mt));
        goto out;
    }
    if (!mt && !(arch && strstr(arch, "Llama"))) {
        s = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: field 'model_type' is missing and "
                         "'architectures' does not name a Llama model", source);
        goto out;
    }
    json_t *act = json_object_get(root, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0)) {
        s = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: field 'hidden_act' is not 'silu'", source);
        goto out;
    }
    int max_pos_legacy = 2048;
    if ((s = cfg_bool_false(root, source, "attention_bias", err)) ||
        (s = cfg_bool_false(root, source, "mlp_bias", err)) ||
        (s = cfg_int(root, source, "hidden_size", true, 0, &c->dim, err)) ||
        (s = cfg_int(root, source, "intermediate_size", true, 0, &c->hidden_dim, err)) ||
        (s = cfg_int(root, source, "num_hidden_layers", true, 0, &c->n_layers, err)) ||
        (s = cfg_int(root, source, "num_attention_heads", true, 0, &c->n_heads, err)) ||
        (s = cfg_int(root, source, "num_key_value_heads", false, c->n_heads, &c->n_kv_heads, err)) ||
        (s = cfg_int(root, source, "head_dim", false, 0, &c->head_dim, err)) ||
        (s = cfg_int(root, source, "vocab_size", true, 0, &c->vocab_size, err)) ||
        (s = cfg_int(root, source, "max_sequence_length", false, 2048, &max_pos_legacy, err)) ||
        (s = cfg_int(root, source, "max_position_embeddings", false, max_pos_legacy,
                     &c->max_seq_len, err)) ||
        (s = cfg_num(root, source, "rms_norm_eps", 1e-6, &c->rms_eps, err)) ||
        (s = cfg_num(root, source, "rope_theta", 10000.0, &c->rope_theta, err)) ||
        (s = cfg_token(root, source, "bos_token_id", &c->bos_id, err)) ||
        (s = cfg_token(root, source, "eos_token_id", &c->eos_id, err)))
        goto out;
    if (c->head_dim == 0) {
        if (c->dim % c->n_heads != 0) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: field 'hidden_size' = %d is not divisible by "
                             "'num_attention_heads' = %d", source, c->dim, c->n_heads);
            goto out;
        }
        c->head_dim = c->dim / c->n_heads;
    }
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: field 'num_attention_heads' = %d is not a multiple "
                         "of 'num_key_value_heads' = %d", source, c->n_heads, c->n_kv_heads);
        goto out;
    }
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_boolean(tie) && !json_is_null(tie)) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: field 'tie_word_embeddings' is not a boolean",
                         source);
        goto out;
    }
    c->tie_embeddings = tie && json_is_true(tie);
    c->rope_style = KS_ROPE_STYLE_HALF;
    if ((s = parse_rope_scaling(root, source, c, err))) goto out;
    /* ids past the vocabulary: drop rather than refuse (some configs carry stale ids) */
    if (c->bos_id >= c->vocab_size) c->bos_id = -1;
    if (c->eos_id >= c->vocab_size) c->eos_id = -1;
    if ((s = ks_config_validate(c, source, err))) goto out;
    json_t *nm = json_object_get(root, "_name_or_path");
    if (hint && json_is_string(nm)) snprintf(hint, 16, "%s", ks_guess_template(json_string_value(nm)));
out:
    json_decref(root);
    return s;
}

/* ---------------------------------------------------------------- the directory */

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t o = a;
    if (a && dir[a - 1] != '/') p[o++] = '/';
    memcpy(p + o, name, b + 1);
    return p;
}

static bool is_file(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Read a whole (small) file; *out is NUL-terminated and malloc'd. */
static ks_status read_text(const char *path, char **out, size_t *len, ks_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= HF_MAX_JSON) {
                free(buf);
                fclose(f);
                return ks_error_set(err, KS_ERR_FORMAT, "%s: larger than %u bytes", path, HF_MAX_JSON);
            }
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return ks_error_set(err, KS_ERR_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return KS_OK;
}

/* A path kept alive for the model's lifetime (tensor sources point at it). */
static ks_status own_path(ks_model *m, const char *dir, const char *name, char **out, ks_error *err) {
    char *p = path_join(dir, name);
    if (!p) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    ks_status s = ks_model_own(m, p, err);
    if (s) return s;
    *out = p;
    return KS_OK;
}

static ks_status load_shard(ks_model *m, const char *path, ks_tensor_table *tab, ks_error *err) {
    const uint8_t *data = NULL;
    size_t len = 0;
    ks_status s = ks_model_map_file(m, path, &data, &len, err);
    if (s) return s;
    return ks_safetensors_parse(data, len, path, tab, err);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static ks_status load_index(ks_model *m, const char *dir, const char *index_path,
                            ks_tensor_table *tab, ks_error *err) {
    char *text = NULL;
    size_t len;
    ks_status s = read_text(index_path, &text, &len, err);
    if (s) return s;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    const char **files = NULL;
    size_t n_files = 0;
    if (!root) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: not valid JSON: %s (line %d)", index_path, je.text,
                         je.line);
        goto out;
    }
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: field 'weight_map' is missing, empty or not an "
                         "object", index_path);
        goto out;
    }
    files = calloc(json_object_size(wm), sizeof *files);
    if (!files) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: field 'weight_map' entry '%s' is not a string",
                             index_path, key);
            goto out;
        }
        const char *f = json_string_value(v);
        if (!*f || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, "..")) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: field 'weight_map' entry '%s' names '%.64s', "
                             "not a file in the directory", index_path, key, f);
            goto out;
        }
        files[n_files++] = f;
    }
    qsort(files, n_files, sizeof *files, cmp_str);
    for (size_t i = 0; i < n_files; i++) {
        if (i && !strcmp(files[i], files[i - 1])) continue;
        char *p = NULL;
        if ((s = own_path(m, dir, files[i], &p, err))) goto out;
        if ((s = load_shard(m, p, tab, err))) goto out;
    }
    if ((s = ks_tensor_table_index(tab, err))) goto out;
    /* every tensor the index lists must be in the shard it names, and no shard may carry one
     * the index does not list */
    json_object_foreach(wm, key, v) {
        ks_tensor_info *t = ks_tensor_table_find(tab, key);
        const char *f = json_string_value(v);
        const char *base = t ? strrchr(t->source, '/') : NULL;
        base = base ? base + 1 : t ? t->source : NULL;
        if (!t || strcmp(base, f) != 0) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: field 'weight_map' lists tensor '%s' in '%s' "
                             "but that shard does not hold it", index_path, key, f);
            goto out;
        }
    }
    for (size_t i = 0; i < tab->n; i++)
        if (!json_object_get(wm, tab->v[i].name)) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s' is not listed in %s 'weight_map'",
                             tab->v[i].source, tab->v[i].name, index_path);
            goto out;
        }
out:
    free(files);
    json_decref(root);
    return s;
}

static const char *template_from_tokenizer_config(const char *dir, char *buf, size_t cap) {
    char *p = path_join(dir, "tokenizer_config.json");
    const char *hint = "plain";
    char *text = NULL;
    size_t len;
    if (p && is_file(p) && read_text(p, &text, &len, NULL) == KS_OK) {
        json_t *root = json_loadb(text, len, 0, NULL);
        json_t *ct = root ? json_object_get(root, "chat_template") : NULL;
        if (json_is_array(ct) && json_array_size(ct) > 0)
            ct = json_object_get(json_array_get(ct, 0), "template");
        if (json_is_string(ct)) {
            snprintf(buf, cap, "%s", json_string_value(ct));
            hint = ks_guess_template(buf);
        }
        json_decref(root);
    }
    free(text);
    free(p);
    return hint;
}

ks_status ks_load_hf(ks_model *m, const char *dir, ks_error *err) {
    ks_tensor_table tab = {0};
    char *cfg_path = path_join(dir, "config.json");
    char *single = path_join(dir, "model.safetensors");
    char *index = path_join(dir, "model.safetensors.index.json");
    char *text = NULL;
    ks_status s = KS_OK;
    if (!cfg_path || !single || !index) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    bool have_single = is_file(single), have_index = is_file(index);
    if (m->no_weights) {
        have_single = have_index = false; /* weights, if any, are not read */
    } else if (!have_single && !have_index) {
        char *pt = path_join(dir, "pytorch_model.bin"), *pti = path_join(dir, "pytorch_model.bin.index.json");
        bool pickle = is_file(pt) || is_file(pti);
        free(pt);
        free(pti);
        if (pickle)
            s = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: holds PyTorch pickle weights "
                             "(pytorch_model*.bin); koalascope never unpickles. Convert to "
                             "safetensors first, e.g. in Python: transformers.AutoModelForCausalLM"
                             ".from_pretrained(DIR).save_pretrained(OUT, safe_serialization=True)",
                             dir);
        else
            s = ks_error_set(err, KS_ERR_NOT_FOUND, "%s: no model.safetensors or "
                             "model.safetensors.index.json in this directory", dir);
        goto out;
    }
    size_t len;
    if (!is_file(cfg_path)) {
        s = ks_error_set(err, KS_ERR_NOT_FOUND, "%s: config.json is missing", dir);
        goto out;
    }
    if ((s = read_text(cfg_path, &text, &len, err))) goto out;
    if ((s = ks_hf_config_parse(text, len, cfg_path, &m->cfg, m->template_hint, err))) goto out;

    if (m->no_weights) {
        if ((s = ks_config_validate(&m->cfg, cfg_path, err)) ||
            (s = ks_model_alloc_zero_weights(m, err)))
            goto out;
        m->format = "hf-config";
    } else if (have_index) {
        if ((s = load_index(m, dir, index, &tab, err))) goto out;
    } else {
        char *p = NULL;
        if ((s = own_path(m, dir, "model.safetensors", &p, err)) || (s = load_shard(m, p, &tab, err)) ||
            (s = ks_tensor_table_index(&tab, err)))
            goto out;
    }
    if (!m->no_weights) {
        if ((s = ks_model_bind_table(m, &tab, KS_NAMING_HF, err))) goto out;
        m->format = "hf-safetensors";
    }

    if (!strcmp(m->template_hint, "plain")) {
        char buf[4096];
        const char *h = template_from_tokenizer_config(dir, buf, sizeof buf);
        if (!strcmp(h, "plain")) h = ks_guess_template(dir);
        snprintf(m->template_hint, sizeof m->template_hint, "%s", h);
    }

    if (m->tokenizer_path) {
        s = ks_model_load_tokenizer(m, m->tokenizer_path, err);
    } else {
        static const char *names[] = {"tokenizer.model", "tokenizer.json"};
        for (size_t i = 0; i < 2; i++) {
            char *p = path_join(dir, names[i]);
            if (!p) {
                s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
                goto out;
            }
            bool there = is_file(p);
            if (there) s = ks_model_load_tokenizer(m, p, err);
            free(p);
            if (there) break;
        }
    }
out:
    ks_tensor_table_free(&tab);
    free(text);
    free(cfg_path);
    free(single);
    free(index);
    return s;
}
