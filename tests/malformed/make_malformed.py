#!/usr/bin/env python3
"""make_malformed.py — write the malformed checkpoints that test_malformed.c feeds to
ks_model_open, one defect each, and cases.tsv: case, expected status, and a substring the
error message must contain (the field, key or tensor at fault). Also writes a few tiny
valid files (valid_*) used as fuzz seeds and as controls.

Python standard library only. Run from anywhere:  python3 tests/malformed/make_malformed.py
The outputs are committed; rerunning rewrites them identically."""

import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "cases")

# A tiny LLaMA: dim 8, hidden 16, 1 layer, 2 heads, 1 kv head (head_dim 4), vocab 8, seq 4.
DIM, HID, LAYERS, HEADS, KV, VOCAB, SEQ = 8, 16, 1, 2, 1, 8, 4
HD = DIM // HEADS
KVD = KV * HD

cases = []  # (name, status, substring)


def put(name, data, status, sub):
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        f.write(data)
    if status:
        cases.append((name, status, sub))


def floats(n, seed=0):
    return struct.pack("<%df" % n, *[((i * 7 + seed * 3) % 17 - 8) * 0.125 for i in range(n)])


# ---------------------------------------------------------------- llama2.c


def l2c_legacy(dim=DIM, hid=HID, layers=LAYERS, heads=HEADS, kv=KV, vocab=VOCAB, seq=SEQ,
               body=True):
    hdr = struct.pack("<7i", dim, hid, layers, heads, kv, vocab, seq)
    if not body:
        return hdr
    hd = dim // heads
    kvd = kv * hd
    n = (vocab * dim + layers * (2 * dim + dim * dim * 2 + kvd * dim * 2 + 3 * hid * dim) + dim
         + seq * hd)
    return hdr + floats(n)


def l2c_v(version, shared=1, group=4, dim=DIM, hid=HID, layers=LAYERS, heads=HEADS, kv=KV,
          vocab=VOCAB, seq=SEQ):
    hdr = struct.pack("<Ii7iB", 0x616B3432, version, dim, hid, layers, heads, kv, vocab, seq,
                      shared)
    if version == 2:
        hdr += struct.pack("<i", group)
    hdr += b"\0" * (256 - len(hdr))
    return hdr


def l2c_v1_body():
    n = LAYERS * 2 * DIM + DIM + VOCAB * DIM + LAYERS * (2 * DIM * DIM + 2 * KVD * DIM
                                                         + 3 * HID * DIM)
    return floats(n)


def l2c_v2_body(group=4):
    out = floats(LAYERS * 2 * DIM + DIM)
    sizes = [VOCAB * DIM] + [DIM * DIM] * LAYERS + [KVD * DIM] * (2 * LAYERS) + \
        [DIM * DIM] * LAYERS + [HID * DIM] * (3 * LAYERS)
    for n in sizes:
        out += bytes((i * 5) % 255 for i in range(n))
        out += struct.pack("<%df" % (n // group), *[0.01] * (n // group))
    return out


def make_llama2c():
    put("valid_legacy.bin", l2c_legacy(), None, None)
    put("valid_v1.bin", l2c_v(1) + l2c_v1_body(), None, None)
    put("valid_v2.bin", l2c_v(2) + l2c_v2_body(), None, None)
    put("l2c_truncated_header.bin", struct.pack("<3i", 8, 16, 1), "KS_ERR_FORMAT",
        "header truncated")
    put("l2c_negative_dim.bin", l2c_legacy(dim=-8, body=False), "KS_ERR_FORMAT", "'dim'")
    put("l2c_zero_heads.bin", l2c_legacy(heads=0, body=False), "KS_ERR_FORMAT", "'n_heads'")
    put("l2c_negative_layers.bin", l2c_legacy(layers=-3, body=False), "KS_ERR_FORMAT",
        "'n_layers'")
    put("l2c_dim_not_divisible.bin", l2c_legacy(dim=9, body=False), "KS_ERR_FORMAT",
        "'dim' = 9 is not divisible")
    put("l2c_kv_heads_not_divisor.bin", l2c_legacy(kv=3, heads=2, body=False), "KS_ERR_FORMAT",
        "'n_kv_heads'")
    put("l2c_truncated_weights.bin", l2c_legacy()[:-40], "KS_ERR_FORMAT", "file size")
    put("l2c_huge_dims.bin", l2c_legacy(dim=1 << 20, hid=1 << 22, layers=4096, heads=1 << 10,
                                        kv=1 << 10, vocab=1 << 24, seq=1 << 26, body=False),
        "KS_ERR_FORMAT", "file size")
    put("l2c_dim_out_of_range.bin", l2c_legacy(dim=1 << 30, heads=1, kv=1, body=False),
        "KS_ERR_FORMAT", "'dim'")
    put("l2c_bad_version.bin", l2c_v(7) + l2c_v1_body(), "KS_ERR_UNSUPPORTED", "'version'")
    put("l2c_v1_truncated_header.bin", l2c_v(1)[:40], "KS_ERR_FORMAT", "header truncated")
    put("l2c_v1_bad_shared_flag.bin", l2c_v(1, shared=7) + l2c_v1_body(), "KS_ERR_FORMAT",
        "'shared_classifier'")
    put("l2c_v1_unshared_missing_head.bin", l2c_v(1, shared=0) + l2c_v1_body(), "KS_ERR_FORMAT",
        "unshared classifier")
    put("l2c_v2_group_zero.bin", l2c_v(2, group=0) + l2c_v2_body(), "KS_ERR_FORMAT",
        "'group_size'")
    put("l2c_v2_group_not_divisor.bin", l2c_v(2, group=3) + l2c_v2_body(), "KS_ERR_FORMAT",
        "'group_size'")


# ---------------------------------------------------------------- pickles


def make_pickles():
    put("pickle_zip.bin", b"PK\x03\x04" + b"\x14\x00" * 20 + b"archive/data.pkl",
        "KS_ERR_UNSUPPORTED", "safe_serialization=True")
    put("pickle_proto2.pt", b"\x80\x02}q\x00(X\x05\x00\x00\x00modelq\x01}q\x02u.",
        "KS_ERR_UNSUPPORTED", "pickle")
    put("pickle_proto4.pth", b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.",
        "KS_ERR_UNSUPPORTED", "never unpickles")
    put("not_a_checkpoint.pt", b"hello, this is not a checkpoint\n", "KS_ERR_FORMAT",
        "no pickle or zip header")


# ---------------------------------------------------------------- GGUF

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    fmt = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?",
           U64: "Q", I64: "q", F64: "d"}
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gval(et, x) for x in items)
    return struct.pack("<" + fmt[t], v)


def gguf_kvs(vocab=True, **over):
    kv = [
        ("general.architecture", STR, "llama"),
        ("general.name", STR, "tiny"),
        ("llama.context_length", U32, SEQ),
        ("llama.embedding_length", U32, DIM),
        ("llama.feed_forward_length", U32, HID),
        ("llama.block_count", U32, LAYERS),
        ("llama.attention.head_count", U32, HEADS),
        ("llama.attention.head_count_kv", U32, KV),
        ("llama.rope.dimension_count", U32, HD),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
    ]
    if vocab:
        pieces = ["<unk>", "<s>", "</s>", "\u2581a", "\u2581b", "a", "b", "\u2581"]
        kv += [
            ("tokenizer.ggml.model", STR, "llama"),
            ("tokenizer.ggml.tokens", ARR, (STR, pieces)),
            ("tokenizer.ggml.scores", ARR, (F32, [0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0])),
            ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3, 1, 1, 1, 1, 1])),
            ("tokenizer.ggml.bos_token_id", U32, 1),
            ("tokenizer.ggml.eos_token_id", U32, 2),
            ("tokenizer.ggml.unknown_token_id", U32, 0),
        ]
    out = []
    for k, t, v in kv:
        if k in over:
            if over[k] is None:
                continue
            t, v = over[k]
        out.append((k, t, v))
    return out


def gguf_tensors():
    """(name, ne (fastest first), ggml type, data)"""
    ts = [("token_embd.weight", [DIM, VOCAB]), ("output_norm.weight", [DIM])]
    for l in range(LAYERS):
        p = "blk.%d." % l
        ts += [(p + "attn_norm.weight", [DIM]), (p + "attn_q.weight", [DIM, DIM]),
               (p + "attn_k.weight", [DIM, KVD]), (p + "attn_v.weight", [DIM, KVD]),
               (p + "attn_output.weight", [DIM, DIM]), (p + "ffn_norm.weight", [DIM]),
               (p + "ffn_gate.weight", [DIM, HID]), (p + "ffn_down.weight", [HID, DIM]),
               (p + "ffn_up.weight", [DIM, HID])]
    out = []
    for i, (n, ne) in enumerate(ts):
        cnt = 1
        for d in ne:
            cnt *= d
        out.append([n, ne, 0, floats(cnt, i)])
    return out


def gguf(kvs=None, tensors=None, version=3, n_tensors=None, n_kv=None, offsets=None,
         align=32, raw_kv=None, tensor_info_patch=None):
    kvs = gguf_kvs() if kvs is None else kvs
    tensors = gguf_tensors() if tensors is None else tensors
    body = b""
    for k, t, v in kvs:
        body += gstr(k) + struct.pack("<I", t) + gval(t, v)
    if raw_kv is not None:
        body += raw_kv
    # data layout
    offs, pos = [], 0
    for n, ne, t, d in tensors:
        offs.append(pos)
        pos += len(d)
        pos = (pos + align - 1) // align * align
    if offsets:
        for i, o in offsets.items():
            offs[i] = o
    info = b""
    for i, (n, ne, t, d) in enumerate(tensors):
        one = gstr(n) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne)
        one += struct.pack("<IQ", t, offs[i])
        if tensor_info_patch and i in tensor_info_patch:
            one = tensor_info_patch[i](one)
        info += one
    nt = len(tensors) if n_tensors is None else n_tensors
    nk = len(kvs) + (1 if raw_kv is not None else 0) if n_kv is None else n_kv
    head = b"GGUF" + struct.pack("<IQQ", version, nt, nk) + body + info
    pad = (-len(head)) % align
    data = b""
    for i, (n, ne, t, d) in enumerate(tensors):
        data += d
        data += b"\0" * ((-len(data)) % align)
    return head + b"\0" * pad + data


def make_gguf():
    put("valid.gguf", gguf(), None, None)
    put("valid_v2.gguf", gguf(version=2), None, None)  # GGUF v2: same layout as v3 (64-bit counts)
    put("valid_vocab_only.gguf", gguf(tensors=[]), None, None)
    put("gguf_truncated.gguf", b"GGUF\x03\x00", "KS_ERR_FORMAT", "truncated")
    put("gguf_bad_version.gguf", gguf(version=1), "KS_ERR_UNSUPPORTED", "'version'")
    put("gguf_huge_n_tensors.gguf", gguf(n_tensors=1 << 60), "KS_ERR_FORMAT", "'n_tensors'")
    put("gguf_huge_n_kv.gguf", gguf(n_kv=(1 << 64) - 1), "KS_ERR_FORMAT", "'n_kv'")
    # a string value whose length runs past the end of the file
    raw = gstr("general.architecture") + struct.pack("<IQ", STR, 10**12) + b"llama"
    put("gguf_string_past_eof.gguf",
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + raw, "KS_ERR_FORMAT", "general.architecture")
    put("gguf_key_past_eof.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) +
        struct.pack("<Q", 1 << 40) + b"general", "KS_ERR_FORMAT", "metadata key length")
    raw = gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARR, STR, 1 << 50)
    put("gguf_array_huge.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + raw, "KS_ERR_FORMAT",
        "tokenizer.ggml.tokens")
    raw = gstr("general.weird") + struct.pack("<I", 99) + b"\0" * 8
    put("gguf_bad_value_type.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + raw,
        "KS_ERR_FORMAT", "general.weird")
    nested = struct.pack("<I", ARR)
    for _ in range(12):
        nested += struct.pack("<IQ", ARR, 1)
    nested += struct.pack("<IQ", U8, 1) + b"\0"
    raw = gstr("general.nested") + nested
    put("gguf_nested_too_deep.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + raw,
        "KS_ERR_FORMAT", "nested")
    put("gguf_wrong_arch.gguf", gguf(gguf_kvs(**{"general.architecture": (STR, "gpt2")})),
        "KS_ERR_UNSUPPORTED", "general.architecture")
    put("gguf_missing_key.gguf", gguf(gguf_kvs(**{"llama.embedding_length": None})),
        "KS_ERR_FORMAT", "llama.embedding_length")
    put("gguf_zero_heads.gguf", gguf(gguf_kvs(**{"llama.attention.head_count": (U32, 0)})),
        "KS_ERR_FORMAT", "llama.attention.head_count")
    put("gguf_dim_not_divisible.gguf", gguf(gguf_kvs(**{"llama.attention.head_count": (U32, 3),
                                                       "llama.attention.head_count_kv": (U32, 3)})),
        "KS_ERR_FORMAT", "llama.embedding_length")
    put("gguf_key_wrong_type.gguf", gguf(gguf_kvs(**{"llama.block_count": (STR, "one")})),
        "KS_ERR_FORMAT", "llama.block_count")
    put("gguf_bad_alignment.gguf", gguf(gguf_kvs() + [("general.alignment", U32, 24)]),
        "KS_ERR_FORMAT", "general.alignment")

    def patch_ndims(one):
        n = struct.unpack_from("<Q", one)[0]
        return one[:8 + n] + struct.pack("<I", 5) + one[12 + n:]
    put("gguf_bad_ndims.gguf", gguf(tensor_info_patch={1: patch_ndims}), "KS_ERR_FORMAT",
        "n_dims")
    t = gguf_tensors()
    t[3][2] = 99
    put("gguf_bad_dtype.gguf", gguf(tensors=t), "KS_ERR_UNSUPPORTED", "ggml type 99")
    t = gguf_tensors()
    t[3][2] = 14  # Q6_K: rows of DIM = 8 elements are not whole 256-element blocks
    put("gguf_partial_block_row.gguf", gguf(tensors=t), "KS_ERR_FORMAT",
        "not a multiple of the q6_k block size 256")
    t = gguf_tensors()
    t[-1][1] = [1 << 40, 1 << 40]
    put("gguf_dims_overflow.gguf", gguf(tensors=t), "KS_ERR_FORMAT", "blk.0.ffn_up.weight")
    put("gguf_offset_past_eof.gguf", gguf(offsets={10: 1 << 20}), "KS_ERR_FORMAT",
        "past the end")
    put("gguf_overlap.gguf", gguf(offsets={4: 0}), "KS_ERR_FORMAT", "overlaps")
    put("gguf_misaligned_offset.gguf", gguf(offsets={2: 4}), "KS_ERR_FORMAT",
        "general.alignment")
    t = gguf_tensors()
    del t[-1]
    put("gguf_missing_tensor.gguf", gguf(tensors=t), "KS_ERR_FORMAT", "blk.0.ffn_up.weight")
    t = gguf_tensors()
    t[3][1] = [DIM, KVD]
    t[3][3] = floats(DIM * KVD)
    put("gguf_wrong_shape.gguf", gguf(tensors=t), "KS_ERR_FORMAT", "blk.0.attn_q.weight")
    t = gguf_tensors()
    t.append(list(t[5]))
    put("gguf_duplicate_tensor.gguf", gguf(tensors=t), "KS_ERR_FORMAT", "appears twice")
    t = gguf_tensors()
    t.append(["blk.7.attn_q.weight", [DIM, DIM], 0, floats(DIM * DIM)])
    put("gguf_unexpected_tensor.gguf", gguf(tensors=t), "KS_ERR_FORMAT", "blk.7.attn_q.weight")
    put("gguf_vocab_tokens_not_strings.gguf",
        gguf(gguf_kvs(**{"tokenizer.ggml.tokens": (ARR, (U32, list(range(VOCAB))))})),
        "KS_ERR_FORMAT", "tokenizer.ggml.tokens")
    pieces9 = ["<unk>", "<s>", "</s>", "\u2581a", "\u2581b", "a", "b", "\u2581", "c"]
    put("gguf_vocab_larger_than_model.gguf",
        gguf(gguf_kvs(**{"tokenizer.ggml.tokens": (ARR, (STR, pieces9)),
                         "tokenizer.ggml.scores": (ARR, (F32, [0.0] * 9)),
                         "tokenizer.ggml.token_type": (ARR, (I32, [2, 3, 3, 1, 1, 1, 1, 1, 1]))})),
        "KS_ERR_FORMAT", "vocab_size")
    put("gguf_scores_wrong_length.gguf",
        gguf(gguf_kvs(**{"tokenizer.ggml.scores": (ARR, (F32, [0.0] * 3))})),
        "KS_ERR_FORMAT", "tokenizer.ggml.scores")
    put("gguf_bos_out_of_range.gguf",
        gguf(gguf_kvs(**{"tokenizer.ggml.bos_token_id": (U32, 4000)})), "KS_ERR_FORMAT",
        "tokenizer.ggml.bos_token_id")


# ---------------------------------------------------------------- safetensors / HF


def hf_config(**over):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": DIM,
         "intermediate_size": HID, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
         "num_key_value_heads": KV, "vocab_size": VOCAB, "max_position_embeddings": SEQ,
         "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu"}
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return json.dumps(c, indent=1).encode()


def st_tensors():
    ts = [("model.embed_tokens.weight", [VOCAB, DIM]), ("model.norm.weight", [DIM])]
    for l in range(LAYERS):
        p = "model.layers.%d." % l
        ts += [(p + "input_layernorm.weight", [DIM]), (p + "self_attn.q_proj.weight", [DIM, DIM]),
               (p + "self_attn.k_proj.weight", [KVD, DIM]),
               (p + "self_attn.v_proj.weight", [KVD, DIM]),
               (p + "self_attn.o_proj.weight", [DIM, DIM]),
               (p + "post_attention_layernorm.weight", [DIM]),
               (p + "mlp.gate_proj.weight", [HID, DIM]), (p + "mlp.down_proj.weight", [DIM, HID]),
               (p + "mlp.up_proj.weight", [HID, DIM])]
    return [[n, "F16", s] for n, s in ts]


def safetensors(tensors=None, offsets=None, header=None, hlen=None):
    tensors = st_tensors() if tensors is None else tensors
    h, pos = {}, 0
    for i, (n, dt, shape) in enumerate(tensors):
        cnt = 1
        for d in shape:
            cnt *= d
        nb = abs(cnt) * {"F32": 4, "F16": 2, "BF16": 2}.get(dt, 8)
        if nb > 1 << 20:  # absurd shapes get no data (their own case says what is wrong)
            nb = 0
        off = [pos, pos + nb]
        if offsets and n in offsets:
            off = offsets[n]
        h[n] = {"dtype": dt, "shape": shape, "data_offsets": off}
        pos += nb
    hb = json.dumps(h, separators=(",", ":")).encode() if header is None else header
    hb += b" " * ((-len(hb)) % 8)
    # f16 0x3c00 = 1.0 everywhere
    return struct.pack("<Q", len(hb) if hlen is None else hlen) + hb + b"\x00\x3c" * (pos // 2)


def hf_dir(name, cfg=None, st=None, status=None, sub=None, extra=None):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "wb") as f:
        f.write(hf_config() if cfg is None else cfg)
    if st is not False:
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(safetensors() if st is None else st)
    for fn, data in (extra or {}).items():
        with open(os.path.join(d, fn), "wb") as f:
            f.write(data)
    if status:
        cases.append((name, status, sub))


def make_hf():
    hf_dir("valid_hf")
    with open(os.path.join(OUT, "valid_config.json"), "wb") as f:
        f.write(hf_config())
    with open(os.path.join(OUT, "valid.safetensors"), "wb") as f:
        f.write(safetensors())
    hf_dir("st_bad_json", st=safetensors(header=b'{"model.norm.weight": {"dtype": "F16",'),
           status="KS_ERR_FORMAT", sub="not valid JSON")
    hf_dir("st_header_len_past_eof", st=safetensors(hlen=1 << 40), status="KS_ERR_FORMAT",
           sub="header length")
    hf_dir("st_truncated", st=b"\x10\x00\x00", status="KS_ERR_FORMAT", sub="truncated")
    hf_dir("st_offsets_out_of_order",
           st=safetensors(offsets={"model.layers.0.mlp.up_proj.weight": [100, 90]}),
           status="KS_ERR_FORMAT", sub="'model.layers.0.mlp.up_proj.weight': data_offsets [100, 90] out of order")
    hf_dir("st_offset_past_eof",
           st=safetensors(offsets={"model.norm.weight": [1 << 30, (1 << 30) + 16]}),
           status="KS_ERR_FORMAT", sub="model.norm.weight")
    hf_dir("st_overlap", st=safetensors(offsets={"model.norm.weight": [0, 16]}),
           status="KS_ERR_FORMAT", sub="overlaps")
    hf_dir("st_size_mismatch", st=safetensors(offsets={"model.norm.weight": [128, 130]}),
           status="KS_ERR_FORMAT", sub="shape")
    t = st_tensors()
    t[1][1] = "I64"
    hf_dir("st_bad_dtype", st=safetensors(t), status="KS_ERR_UNSUPPORTED", sub="dtype 'I64'")
    t = st_tensors()
    t[-1][2] = [1 << 62, 1 << 62]
    hf_dir("st_shape_overflow", st=safetensors(t), status="KS_ERR_FORMAT", sub="overflows")
    t = st_tensors()
    t[-1][2] = [HID, -DIM]
    hf_dir("st_shape_negative", st=safetensors(t), status="KS_ERR_FORMAT", sub="'shape'")
    t = st_tensors()
    del t[-1]
    hf_dir("st_missing_tensor", st=safetensors(t), status="KS_ERR_FORMAT",
           sub="model.layers.0.mlp.up_proj.weight")
    t = st_tensors()
    t[3][2] = [DIM, DIM + 1]
    hf_dir("st_wrong_shape", st=safetensors(t), status="KS_ERR_FORMAT",
           sub="model.layers.0.self_attn.q_proj.weight")
    t = st_tensors() + [["model.layers.3.mlp.up_proj.weight", "F16", [HID, DIM]]]
    hf_dir("st_unexpected_tensor", st=safetensors(t), status="KS_ERR_FORMAT",
           sub="model.layers.3.mlp.up_proj.weight")
    hf_dir("st_untied_missing_head", cfg=hf_config(tie_word_embeddings=False),
           status="KS_ERR_FORMAT", sub="lm_head.weight")
    hf_dir("hf_config_bad_json", cfg=b'{"hidden_size": 8,, }', status="KS_ERR_FORMAT",
           sub="config.json")
    hf_dir("hf_config_zero_heads", cfg=hf_config(num_attention_heads=0), status="KS_ERR_FORMAT",
           sub="num_attention_heads")
    hf_dir("hf_config_dim_not_divisible", cfg=hf_config(num_attention_heads=3,
                                                        num_key_value_heads=3),
           status="KS_ERR_FORMAT", sub="'hidden_size' = 8 is not divisible")
    hf_dir("hf_config_kv_not_divisor", cfg=hf_config(num_key_value_heads=3),
           status="KS_ERR_FORMAT", sub="num_key_value_heads")
    hf_dir("hf_config_missing_vocab", cfg=hf_config(vocab_size=None), status="KS_ERR_FORMAT",
           sub="vocab_size")
    hf_dir("hf_config_string_dim", cfg=hf_config(hidden_size="8"), status="KS_ERR_FORMAT",
           sub="hidden_size")
    hf_dir("hf_config_attention_bias", cfg=hf_config(attention_bias=True),
           status="KS_ERR_UNSUPPORTED", sub="attention_bias")
    hf_dir("hf_config_mlp_bias", cfg=hf_config(mlp_bias=True), status="KS_ERR_UNSUPPORTED",
           sub="mlp_bias")
    hf_dir("hf_config_mistral", cfg=hf_config(model_type="mistral"), status="KS_ERR_UNSUPPORTED",
           sub="model_type")
    hf_dir("hf_config_rope_yarn", cfg=hf_config(rope_scaling={"type": "yarn", "factor": 4.0}),
           status="KS_ERR_UNSUPPORTED", sub="rope_scaling")
    hf_dir("hf_config_llama3_no_orig",
           cfg=hf_config(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
           status="KS_ERR_FORMAT", sub="original_max_position_embeddings")
    hf_dir("hf_config_eps_negative", cfg=hf_config(rms_norm_eps=-1.0), status="KS_ERR_FORMAT",
           sub="rms_norm_eps")
    hf_dir("hf_pickle_only", st=False, extra={"pytorch_model.bin": b"PK\x03\x04rest"},
           status="KS_ERR_UNSUPPORTED", sub="pytorch_model")
    hf_dir("hf_tokenizer_garbage", extra={"tokenizer.model": b"\x0a\xff\xff\xff\xff\x0f garbage"},
           status="KS_ERR_FORMAT", sub="tokenizer.model")
    hf_dir("hf_no_weights", st=False, status="KS_ERR_NOT_FOUND", sub="model.safetensors")
    idx = {"metadata": {}, "weight_map": {n: "model-00001-of-00002.safetensors"
                                          for n, _, _ in st_tensors()}}
    hf_dir("hf_index_missing_shard", st=False,
           extra={"model.safetensors.index.json": json.dumps(idx).encode()},
           status="KS_ERR_IO", sub="model-00001-of-00002.safetensors")
    idx = {"metadata": {}, "weight_map": {n: "../escape.safetensors" for n, _, _ in st_tensors()}}
    hf_dir("hf_index_bad_path", st=False,
           extra={"model.safetensors.index.json": json.dumps(idx).encode()},
           status="KS_ERR_FORMAT", sub="weight_map")


SEEDS = {
    "fuzz_llama2c": ["valid_legacy.bin", "valid_v1.bin", "valid_v2.bin", "l2c_bad_version.bin",
                     "l2c_v1_unshared_missing_head.bin", "l2c_truncated_weights.bin"],
    "fuzz_gguf": ["valid.gguf", "valid_vocab_only.gguf", "gguf_nested_too_deep.gguf",
                  "gguf_overlap.gguf", "gguf_wrong_shape.gguf", "gguf_bad_value_type.gguf"],
    "fuzz_safetensors": ["valid.safetensors", "st_overlap/model.safetensors",
                         "st_offsets_out_of_order/model.safetensors",
                         "st_unexpected_tensor/model.safetensors",
                         "st_bad_dtype/model.safetensors"],
    "fuzz_hf_config": ["valid_config.json", "hf_config_rope_yarn/config.json",
                       "hf_config_llama3_no_orig/config.json", "hf_config_bad_json/config.json",
                       "hf_config_kv_not_divisor/config.json"],
}


def write_seeds():
    """Seed corpora for the fuzz targets: the valid controls and a few near-misses."""
    root = os.path.join(HERE, "..", "fuzz", "seeds")
    for target, files in SEEDS.items():
        d = os.path.join(root, target)
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
        for fn in files:
            shutil.copyfile(os.path.join(OUT, fn), os.path.join(d, fn.replace("/", "_")))
    # a llama3 rope config that parses, so the fuzzer starts from the deepest path
    with open(os.path.join(root, "fuzz_hf_config", "llama3_config.json"), "wb") as f:
        f.write(hf_config(rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 8192},
                          eos_token_id=[2, 3], bos_token_id=1, head_dim=4))


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    make_llama2c()
    make_pickles()
    make_gguf()
    make_hf()
    with open(os.path.join(HERE, "cases.tsv"), "w") as f:
        f.write("# case\texpected status\tmessage must contain\n")
        for name, st, sub in cases:
            assert "\t" not in sub and "\n" not in sub
            f.write("%s\t%s\t%s\n" % (name, st, sub))
    write_seeds()
    print("wrote %d malformed cases to %s" % (len(cases), OUT))


if __name__ == "__main__":
    main()
