#!/usr/bin/python3
"""make_dump_cases.py — write small koalascope dumps for tests/test_dump_read.c and the
fuzz_dump seeds, following docs/FORMAT.md with h5py + NumPy only (independently of the C
writer in activations/record.c, so the two meet only in the format):

  cases/valid.h5           2 layers, 3 prompts of 3, 5 and 1 tokens, positions "all"; hooks
                           hook_embed (f16), blocks.0.hook_resid_post (f32),
                           blocks.1.attn.hook_pattern (f32, all heads), blocks.1.attn.hook_z
                           (bf16); top-3 logits
  cases/valid_last.h5      the same prompts with positions "last"
  cases/valid_wide_strings.h5
                           valid.h5 with 400000-byte token strings and 3 MiB prompt texts
  cases/interrupted.h5     valid.h5 plus an uncommitted fourth prompt, left by a SWMR writer
                           that never closed the file (HDF5's "open for writing" flag set)
  cases/valid_expected.json, valid_last_expected.json, interrupted_expected.json
                           every number the C reader must give back (the oracle: the NumPy
                           arrays written, after rounding to the storage dtype; NaN as null)
  cases/<defect>.h5        one defect each
  cases/EXPECTED.txt       name <TAB> status <TAB> substring the first error must contain

Run with Debian's Python (it has h5py):  /usr/bin/python3 tests/dumps/make_dump_cases.py
Fixed seeds, libver "latest", no timestamps: rerunning rewrites the same bytes."""

import json
import os

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "cases")

CONFIG = {
    "dim": 8, "hidden_dim": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "head_dim": 4,
    "vocab_size": 32, "max_seq_len": 64, "rms_eps": 1e-5, "rope_theta": 10000.0,
    "rope_style": "interleaved", "rope_scaling": "none", "rope_factor": 1.0,
    "tie_embeddings": False, "bos_id": 1, "eos_id": 2,
}
PROMPT_LENS = [3, 5, 1]      # tokens of each prompt (input + generated)
INPUT_LENS = [3, 3, 1]       # prompt 1 generated 2 tokens
TEXTS = ["Hello world", "Once upon a time", "caf\u00e9 \u2615"]
IDS = ["greeting", "story-1", "2"]
GENERATIONS = ["", " the end", ""]
TOPK = 3

# ------------------------------------------------------------------ dtypes


def bf16_type():
    """HDF5 float type 1-8-7, bias 127 (docs/FORMAT.md)."""
    t = h5py.h5t.IEEE_F32LE.copy()
    t.set_fields(15, 7, 8, 0, 7)
    t.set_precision(16)
    t.set_size(2)
    t.set_ebias(127)
    return t


def to_bf16_bits(x):
    """f32 -> bf16 bits, round to nearest even (no NaN in our data)."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_bits_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


# ------------------------------------------------------------------ the dump as data


class DS:
    """One dataset: data (NumPy array, list of str for strings), storage kind
    ('i4', 'i8', 'f4', 'f2', 'bf16', 'str'; for malformed cases also 'vstr', variable-length
    strings, and 'vlen_i4', variable-length integer sequences), attributes. width: the
    fixed length of a 'str' dataset in bytes (None: the longest value); deflate: compress
    with deflate level 1."""

    def __init__(self, data, kind, attrs=None, width=None, deflate=False):
        self.data, self.kind, self.attrs = data, kind, dict(attrs or {})
        self.width, self.deflate = width, deflate


def make_spec(positions):
    rng = np.random.default_rng(1234)
    P = len(PROMPT_LENS)
    # rows: which positions each prompt records
    rows = []
    for n in PROMPT_LENS:
        rows.append(list(range(n)) if positions == "all" else [n - 1])
    prompt_offsets = np.concatenate([[0], np.cumsum(PROMPT_LENS)]).astype(np.int64)
    row_offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    attn_counts = [sum(q + 1 for q in r) for r in rows]
    attn_offsets = np.concatenate([[0], np.cumsum(attn_counts)]).astype(np.int64)
    N, R, K = int(prompt_offsets[-1]), int(row_offsets[-1]), int(attn_offsets[-1])
    row_positions = np.array([q for r in rows for q in r], np.int32)
    starts = []
    for p, r in enumerate(rows):
        s = int(attn_offsets[p])
        for q in r:
            starts.append(s)
            s += q + 1
    attn_row_starts = np.array(starts, np.int64)

    tokens = []
    for n in PROMPT_LENS:
        tokens += [CONFIG["bos_id"]] + list(rng.integers(3, CONFIG["vocab_size"], n - 1))
    tokens = np.array(tokens, np.int32)
    token_strings = ["<s>" if t == 1 else (" w%d" % t if t % 2 else "w%d" % t) for t in tokens]
    token_strings[4] = "\u00e9t\u00e9"  # a UTF-8 piece

    d, hid, nh, hd = CONFIG["dim"], CONFIG["hidden_dim"], CONFIG["n_heads"], CONFIG["head_dim"]
    embed = rng.standard_normal((R, d)).astype(np.float16)
    resid = rng.standard_normal((R, d)).astype(np.float32)
    z = rng.standard_normal((R, nh, hd)).astype(np.float32) * 3
    z_bits = to_bf16_bits(z)
    pattern = np.zeros((nh, K), np.float32)
    for r in range(R):
        q, s = int(row_positions[r]), int(attn_row_starts[r])
        for h in range(nh):
            e = np.exp(rng.standard_normal(q + 1))
            pattern[h, s:s + q + 1] = (e / e.sum()).astype(np.float32)

    topk_ids = np.stack([rng.choice(CONFIG["vocab_size"], TOPK, replace=False)
                         for _ in range(R)]).astype(np.int32)
    topk_lp = -np.sort(rng.random((R, TOPK)) * 5, axis=1).astype(np.float32)
    next_lp = (-rng.random(R) * 6).astype(np.float32)
    for p in range(P):
        for r in range(int(row_offsets[p]), int(row_offsets[p + 1])):
            if row_positions[r] == PROMPT_LENS[p] - 1:
                next_lp[r] = np.nan

    def act(data, kind, hook, layer, akind, axes, heads=None):
        a = {"hook": hook, "layer": ("i4", layer), "kind": akind, "axes": axes}
        if heads is not None:
            a["heads"] = np.array(heads, np.int32)
        return DS(data, kind, a)

    ds = {
        "prompt_offsets": DS(prompt_offsets, "i8"),
        "row_offsets": DS(row_offsets, "i8"),
        "attn_offsets": DS(attn_offsets, "i8"),
        # widths: prompts and generations padded as a writer with a text limit would (and
        # compressed, being mostly padding); prompt_ids and token_strings exactly as wide as
        # their longest value ("greeting", "\u00e9t\u00e9": 8 and 5 bytes), which is
        # therefore stored without a NUL
        "prompts": DS(list(TEXTS), "str", width=64, deflate=True),
        "prompt_ids": DS(list(IDS), "str"),
        "prompt_lengths": DS(np.array(INPUT_LENS, np.int32), "i4"),
        "generations": DS(list(GENERATIONS), "str", width=32, deflate=True),
        "tokens": DS(tokens, "i4"),
        "token_strings": DS(token_strings, "str"),
        "row_positions": DS(row_positions, "i4"),
        "attn_row_starts": DS(attn_row_starts, "i8"),
        "activations/hook_embed": act(embed, "f2", "hook_embed", -1, "token", "row,d_model"),
        "activations/blocks.0.hook_resid_post": act(resid, "f4", "blocks.0.hook_resid_post", 0,
                                                    "token", "row,d_model"),
        "activations/blocks.1.attn.hook_pattern": act(pattern, "f4", "blocks.1.attn.hook_pattern",
                                                      1, "attention", "head,key", [0, 1]),
        "activations/blocks.1.attn.hook_z": act(z_bits, "bf16", "blocks.1.attn.hook_z", 1,
                                                "token", "row,head,d_head", [0, 1]),
        "logits/topk_ids": DS(topk_ids, "i4"),
        "logits/topk_logprobs": DS(topk_lp, "f4"),
        "logits/next_logprob": DS(next_lp, "f4"),
    }
    attrs = {
        "format": "koalascope-dump",
        "format_version": ("i4", 1),
        "koalascope_version": "0.1.0",
        "created": "2025-01-02T03:04:05Z",
        "command_line": "koalascope record tiny.gguf --prompts prompts.jsonl -o valid.h5",
        "complete": ("i1", 1),
        "n_prompts_planned": ("i8", P),
        "resume_count": ("i4", 0),
        "model_path": "tiny.gguf",
        "model_format": "gguf",
        "model_sha256": "ab" * 32,
        "model_sha256_of": "weights",
        "model_weight_dtype": "f32",
        "model_config": json.dumps(CONFIG),
        "tokenizer_source": "model",
        "tokenizer_sha256": "cd" * 32,
        "tokenizer_vocab_size": ("i4", CONFIG["vocab_size"]),
        "chat_template": "none",
        "system_prompt": "",
        "backend": "cpu",
        "compute_dtype": "f32",
        "storage_dtype": "f32",
        "compression": "none",
        "hooks": "hook_embed,blocks.0.hook_resid_post,blocks.1.attn.hook_pattern,blocks.1.attn.hook_z",
        "positions": positions,
        "heads": "all",
        "logits_topk": ("i4", TOPK),
        "logits_full": ("i1", 0),
        "prompts_source": "prompts.jsonl",
        "prompts_sha256": "ef" * 32,
        "generate_max_tokens": ("i4", 2),
        "sampling": json.dumps({"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 42}),
    }
    expected = make_expected(positions, prompt_offsets, row_offsets, attn_offsets, tokens,
                             token_strings, row_positions, attn_row_starts, embed, resid,
                             bf16_bits_to_f32(z_bits), pattern, topk_ids, topk_lp, next_lp)
    return {"attrs": attrs, "ds": ds}, expected


def floats(a):
    return [None if np.isnan(v) else float(v) for v in np.asarray(a, np.float32).ravel()]


def make_expected(positions, po, ro, ao, tokens, tstr, rpos, starts, embed, resid, z, pattern,
                  topk_ids, topk_lp, next_lp):
    P = len(PROMPT_LENS)
    prompts = []
    for p in range(P):
        t0, t1, r0, r1, a0, a1 = (int(x) for x in (po[p], po[p + 1], ro[p], ro[p + 1], ao[p], ao[p + 1]))
        n = t1 - t0
        squares = []
        for h in range(CONFIG["n_heads"]):
            sq = np.zeros((n, n), np.float32)
            for r in range(r0, r1):
                q = int(rpos[r])
                sq[q, :q + 1] = pattern[h, starts[r]:starts[r] + q + 1]
            squares.append(floats(sq))
        prompts.append({
            "tok_begin": t0, "n_tokens": n, "n_prompt_tokens": INPUT_LENS[p],
            "row_begin": r0, "n_rows": r1 - r0, "attn_begin": a0, "n_attn": a1 - a0,
            "text": TEXTS[p], "id": IDS[p], "generation": GENERATIONS[p],
            "tokens": [int(x) for x in tokens[t0:t1]],
            "token_strings": tstr[t0:t1],
            "positions": [int(x) for x in rpos[r0:r1]],
            "rows": {
                "hook_embed": floats(embed[r0:r1]),
                "blocks.0.hook_resid_post": floats(resid[r0:r1]),
                "blocks.1.attn.hook_z": floats(z[r0:r1]),
            },
            "attention": floats(pattern[:, a0:a1]),  # [heads, n_attn]
            "attention_square": squares,             # per head, [n, n]
            "topk_ids": [int(x) for x in topk_ids[r0:r1].ravel()],
            "topk_logprobs": floats(topk_lp[r0:r1]),
            "next_logprob": floats(next_lp[r0:r1]),
        })
    return {
        "config": CONFIG,
        "n_prompts": P, "n_tokens": int(po[-1]), "n_rows": int(ro[-1]), "logits_topk": TOPK,
        "complete": True,
        "attrs": {"format": "koalascope-dump", "format_version": "1", "complete": "1",
                  "positions": positions, "logits_topk": "3", "n_prompts_planned": "3",
                  "model_format": "gguf", "storage_dtype": "f32"},
        "hooks": [  # in forward order
            {"name": "hook_embed", "kind": "token", "dtype": "f16", "layer": -1, "dims": [8],
             "heads": []},
            {"name": "blocks.0.hook_resid_post", "kind": "token", "dtype": "f32", "layer": 0,
             "dims": [8], "heads": []},
            {"name": "blocks.1.attn.hook_pattern", "kind": "attention", "dtype": "f32",
             "layer": 1, "dims": [2], "heads": [0, 1]},
            {"name": "blocks.1.attn.hook_z", "kind": "token", "dtype": "bf16", "layer": 1,
             "dims": [2, 4], "heads": [0, 1]},
        ],
        "prompts": prompts,
    }


# ------------------------------------------------------------------ writing


def fixed_str_type(width, pad):
    """Fixed-length UTF-8 string type of width bytes, padding pad (h5py.h5t.STR_*)."""
    t = h5py.h5t.C_S1.copy()
    t.set_size(width)
    t.set_strpad(pad)
    t.set_cset(h5py.h5t.CSET_UTF8)
    return t


def put_attr(obj, name, v):
    """v: str (fixed-length NULLTERM UTF-8 of len + 1 bytes, as docs/FORMAT.md says), (dtype,
    value) for a number, ("vlen", str) for a variable-length string (malformed cases), or an
    array."""
    if isinstance(v, tuple) and v[0] == "vlen":
        obj.attrs.create(name, v[1], dtype=h5py.string_dtype("utf-8"))
    elif isinstance(v, tuple):
        obj.attrs.create(name, np.array(v[1], dtype=v[0]))
    elif isinstance(v, str):
        b = v.encode("utf-8")
        t = fixed_str_type(len(b) + 1, h5py.h5t.STR_NULLTERM)
        if name in obj.attrs:
            del obj.attrs[name]
        a = h5py.h5a.create(obj.id, name.encode(), t, h5py.h5s.create(h5py.h5s.SCALAR))
        a.write(np.array(b, dtype="S%d" % (len(b) + 1)), mtype=t)
        a.close()
    else:
        obj.attrs.create(name, v)


def str_array(values, width):
    """values as fixed-length bytes of width (NUL-padded; a value of exactly width bytes
    keeps no NUL)."""
    enc = [x.encode("utf-8") for x in values]
    assert all(len(b) <= width for b in enc), "a value longer than the width"
    # h5py's UTF-8 flavour of "S<width>": HDF5 will not convert ASCII to UTF-8
    return np.array(enc, dtype=h5py.string_dtype("utf-8", width))


def str_width(d):
    return d.width or max([1] + [len(x.encode("utf-8")) for x in d.data])


def write_dump(path, spec, keep_open=False, libver=h5py.h5f.LIBVER_LATEST):
    """Chunked, extendible datasets as docs/FORMAT.md says; chunks kept small (the chunk size
    is the writer's choice, not part of the contract) so the files stay tiny. keep_open:
    return the open h5py.File instead of closing it."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(libver, h5py.h5f.LIBVER_LATEST)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_attr_phase_change(64, 48)  # root attributes in the object header: smaller file
    fcpl.set_obj_track_times(False)
    fid = h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl)
    f = h5py.File(fid)
    if True:
        for name, v in spec["attrs"].items():
            put_attr(f, name, v)
        # groups without modification times (h5py would stamp them: not reproducible)
        gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
        gcpl.set_obj_track_times(False)
        for g in sorted({n.split("/")[0] for n in spec["ds"] if "/" in n}):
            h5py.h5g.create(f.id, g.encode(), gcpl=gcpl)
        for name, d in spec["ds"].items():
            if d.kind == "str":
                # fixed-length, NUL-padded UTF-8 (docs/FORMAT.md): no variable-length data,
                # whose global heap HDF5 does not checksum
                w = str_width(d)
                data = str_array(d.data, w)
                ds = f.create_dataset(name, data=data, dtype=h5py.string_dtype("utf-8", w),
                                      chunks=(max(1, min(16, len(data))),), maxshape=(None,),
                                      track_times=False,
                                      **({"compression": "gzip", "compression_opts": 1}
                                         if d.deflate else {}))
            elif d.kind == "vstr":  # malformed cases only
                data = np.array(d.data, dtype=object)
                ds = f.create_dataset(name, data=data, dtype=h5py.string_dtype("utf-8"),
                                      chunks=(max(1, min(16, len(data))),), maxshape=(None,),
                                      track_times=False)
            elif d.kind == "vlen_i4":  # malformed cases only
                data = np.empty(len(d.data), dtype=object)
                for i, x in enumerate(d.data):
                    data[i] = np.frombuffer(x.encode("utf-8"), np.uint8).astype(np.int32)
                ds = f.create_dataset(name, data=data, dtype=h5py.vlen_dtype(np.int32),
                                      chunks=(max(1, len(data)),), maxshape=(None,),
                                      track_times=False)
            elif d.kind == "str_unwritten":  # malformed cases only: width d.width, never written
                ds = f.create_dataset(name, shape=(len(d.data),),
                                      dtype=h5py.string_dtype("utf-8", d.width), chunks=(1,),
                                      maxshape=(None,), track_times=False)
            elif d.kind == "bf16":
                data = np.asarray(d.data, np.uint16)
                grp = f[os.path.dirname(name)] if "/" in name else f
                space = h5py.h5s.create_simple(data.shape, (h5py.h5s.UNLIMITED,) + data.shape[1:])
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_chunk(tuple(max(1, s) for s in data.shape))
                dcpl.set_obj_track_times(False)
                dsid = h5py.h5d.create(grp.id, os.path.basename(name).encode(), bf16_type(),
                                       space, dcpl=dcpl)
                # the bits are already bf16: write them with the file type as memory type
                dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data),
                           mtype=bf16_type())
                ds = f[name]
            else:
                data = np.asarray(d.data, dtype=d.kind)
                maxshape = (None,) + data.shape[1:]
                if "hook_pattern" in name or "hook_attn_scores" in name:
                    maxshape = data.shape[:1] + (None,) if data.ndim == 2 else (None,) * data.ndim
                ds = f.create_dataset(name, data=data, chunks=tuple(max(1, s) for s in data.shape),
                                      maxshape=maxshape, track_times=False)
            for an, av in d.attrs.items():
                put_attr(ds, an, av)
    if keep_open:
        return f
    f.close()
    return None


def append(ds, data, axis=0, bf16=False):
    """Extend ds along axis by data (bf16: data holds the bits; a list of str for a string
    dataset) and write it there."""
    if isinstance(data, list):
        data = str_array(data, ds.dtype.itemsize)
    data = np.ascontiguousarray(data)
    shape = list(ds.shape)
    start = [0] * len(shape)
    start[axis] = shape[axis]
    shape[axis] += data.shape[axis]
    ds.resize(tuple(shape))
    if bf16:
        fs = ds.id.get_space()
        fs.select_hyperslab(tuple(start), data.shape)
        ds.id.write(h5py.h5s.create_simple(data.shape), fs, data, mtype=bf16_type())
    else:
        ds[tuple(slice(a, a + n) for a, n in zip(start, data.shape))] = data


def write_interrupted(path):
    """valid.h5's three prompts committed, then a writer in SWMR mode (as koalascope record
    runs) appends a fourth prompt to every dataset, extends /row_offsets and /attn_offsets,
    and is killed before it extends /prompt_offsets: the file keeps HDF5's "open for
    writing" flag, a stale end of allocation, and data past the committed counts."""
    spec, _ = make_spec("all")
    spec["attrs"]["complete"] = ("i1", 0)
    spec["attrs"]["n_prompts_planned"] = ("i8", 4)
    pid = os.fork()
    if pid == 0:  # the writer that gets killed
        code = 1
        try:
            f = write_dump(path, spec, keep_open=True)
            f.swmr_mode = True
            rng = np.random.default_rng(99)
            n, keys = 2, 3  # the fourth prompt: 2 tokens, 2 rows at positions 0 and 1
            a = f["activations"]
            append(f["tokens"], np.array([1, 7], np.int32))
            append(f["token_strings"], ["<s>", " w7"])
            append(f["row_positions"], np.array([0, 1], np.int32))
            append(f["attn_row_starts"], np.array([22, 23], np.int64))
            append(a["hook_embed"], rng.standard_normal((n, 8)).astype(np.float16))
            append(a["blocks.0.hook_resid_post"], rng.standard_normal((n, 8)).astype(np.float32))
            append(a["blocks.1.attn.hook_z"], to_bf16_bits(rng.standard_normal((n, 2, 4))), bf16=True)
            append(a["blocks.1.attn.hook_pattern"], np.full((2, keys), 0.5, np.float32), axis=1)
            append(f["logits/topk_ids"], np.zeros((n, TOPK), np.int32))
            append(f["logits/topk_logprobs"], np.zeros((n, TOPK), np.float32))
            append(f["logits/next_logprob"], np.zeros(n, np.float32))
            append(f["prompts"], ["tail"])
            append(f["prompt_ids"], ["tail"])
            append(f["generations"], [""])
            append(f["prompt_lengths"], np.array([2], np.int32))
            append(f["row_offsets"], np.array([11], np.int64))
            append(f["attn_offsets"], np.array([25], np.int64))
            f.flush()
            code = 0
        finally:
            os._exit(code)  # no close: as if killed
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise SystemExit("the SWMR writer child failed")


cases = []  # (name, status, substring)


def case(name, status, sub, mutate=None, positions="all", raw=None, libver=h5py.h5f.LIBVER_LATEST):
    path = os.path.join(OUT, name)
    if raw is not None:
        with open(path, "wb") as f:
            f.write(raw)
    else:
        spec, _ = make_spec(positions)
        if mutate:
            mutate(spec)
        write_dump(path, spec, libver=libver)
    cases.append((name, status, sub))


def set_ds(name, **kw):
    def m(spec):
        for k, v in kw.items():
            setattr(spec["ds"][name], k, v)
    return m


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))

    for name, positions in (("valid", "all"), ("valid_last", "last")):
        spec, expected = make_spec(positions)
        write_dump(os.path.join(OUT, name + ".h5"), spec)
        with open(os.path.join(OUT, name + "_expected.json"), "w") as f:
            json.dump(expected, f, indent=1, ensure_ascii=False)
            f.write("\n")
    # valid.h5 with wide strings (deflated: the file stays small): the reader reads
    # /token_strings (400000 bytes each) in blocks of a few strings, and each /prompts value
    # (3 MiB) alone; same values as valid_expected.json
    spec, _ = make_spec("all")
    spec["ds"]["token_strings"].width = 400000
    spec["ds"]["token_strings"].deflate = True
    spec["ds"]["prompts"].width = 3 << 20
    write_dump(os.path.join(OUT, "valid_wide_strings.h5"), spec)
    with open(os.path.join(OUT, "valid.h5"), "rb") as f:
        valid_bytes = f.read()
    write_interrupted(os.path.join(OUT, "interrupted.h5"))
    _, expected = make_spec("all")
    expected["complete"] = False
    expected["attrs"].update(complete="0", n_prompts_planned="4")
    with open(os.path.join(OUT, "interrupted_expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")

    spec0, _ = make_spec("all")
    po = spec0["ds"]["prompt_offsets"].data

    # --- not a dump at all
    case("empty.h5", "KS_ERR_FORMAT", "not an HDF5 file", raw=b"")
    case("text_file.h5", "KS_ERR_FORMAT", "not an HDF5 file",
         raw=b"prompt,tokens\nhello,3\nthis is a CSV file, not HDF5\n")
    case("truncated.h5", "KS_ERR_FORMAT", "truncated", raw=valid_bytes[:len(valid_bytes) // 2])
    # an interrupted dump cut short: HDF5 skips its size check for SWMR readers (a dump
    # whose writer met a full disk is legitimately shorter than its superblock says), so
    # what fails is the checksum of the metadata past the end
    with open(os.path.join(OUT, "interrupted.h5"), "rb") as f:
        interrupted_bytes = f.read()
    case("truncated_interrupted.h5", "KS_ERR_FORMAT", "checksum",
         raw=interrupted_bytes[:len(interrupted_bytes) * 3 // 4])

    def plain(spec):
        # an h5py file as users write them (str attributes are variable-length by default):
        # "not a koalascope dump", not a complaint about the attribute's type
        spec["attrs"] = {"title": ("vlen", "some data")}
        spec["ds"] = {"data": DS(np.arange(10, dtype=np.float32), "f4")}
    case("plain_hdf5.h5", "KS_ERR_FORMAT", "not a koalascope dump", plain)
    # a valid dump in HDF5's default (earliest) format: superblock 0, object headers without
    # checksums, on which libhdf5 1.10.8 itself can crash when corrupted (docs/FUZZING.md):
    # refused before HDF5 opens it
    case("superblock_0.h5", "KS_ERR_FORMAT", "HDF5 superblock version 0",
         libver=h5py.h5f.LIBVER_EARLIEST)

    # --- root attributes
    case("no_format_attr.h5", "KS_ERR_FORMAT", "no 'format' attribute",
         lambda s: s["attrs"].pop("format"))
    case("wrong_format.h5", "KS_ERR_FORMAT", "not a koalascope dump",
         lambda s: s["attrs"].update(format="netcdf-dump"))
    case("format_version_99.h5", "KS_ERR_UNSUPPORTED", "format_version",
         lambda s: s["attrs"].update(format_version=("i4", 99)))
    # variable-length data anywhere is refused before it is read (its global heap has no
    # checksum, and libhdf5 1.10 crashes on a corrupted one)
    case("format_attr_vlen.h5", "KS_ERR_FORMAT", "variable-length strings are not part",
         lambda s: s["attrs"].update(format=("vlen", "koalascope-dump")))
    case("model_path_attr_vlen.h5", "KS_ERR_FORMAT", "variable-length strings are not part",
         lambda s: s["attrs"].update(model_path=("vlen", "tiny.gguf")))
    case("prompts_vlen.h5", "KS_ERR_FORMAT", "/prompts: variable-length strings are not part",
         set_ds("prompts", kind="vstr"))
    case("prompt_ids_vlen_int.h5", "KS_ERR_FORMAT", "/prompt_ids: variable-length data",
         set_ds("prompt_ids", kind="vlen_i4"))
    case("hook_attr_vlen.h5", "KS_ERR_FORMAT", "attribute 'kind': variable-length strings",
         lambda s: s["ds"]["activations/hook_embed"].attrs.update(kind=("vlen", "token")))
    # 17 MiB strings, never written (the file stays small): wider than the reader accepts
    case("token_strings_too_wide.h5", "KS_ERR_FORMAT", "fixed-length strings of 17825792 bytes",
         set_ds("token_strings", kind="str_unwritten", width=17 << 20))
    case("token_strings_int.h5", "KS_ERR_FORMAT", "/token_strings: type is not a string",
         set_ds("token_strings", kind="i4", data=np.arange(9, dtype=np.int32)))
    case("model_config_not_json.h5", "KS_ERR_FORMAT", "model_config",
         lambda s: s["attrs"].update(model_config="{dim: 8, n_layers"))

    def no_layers(spec):
        c = dict(CONFIG)
        del c["n_layers"]
        spec["attrs"]["model_config"] = json.dumps(c)
    case("model_config_no_n_layers.h5", "KS_ERR_FORMAT", "n_layers", no_layers)

    def neg_heads(spec):
        spec["attrs"]["model_config"] = json.dumps(dict(CONFIG, n_heads=-2))
    case("model_config_negative_heads.h5", "KS_ERR_FORMAT", "n_heads", neg_heads)

    # --- offsets
    case("offsets_decreasing.h5", "KS_ERR_FORMAT", "decreasing",
         set_ds("prompt_offsets", data=np.array([0, 5, 3, 9], np.int64)))
    case("offsets_first_nonzero.h5", "KS_ERR_FORMAT", "[0] = 1",
         set_ds("row_offsets", data=np.array([1, 3, 8, 9], np.int64)))
    case("offsets_beyond_tokens.h5", "KS_ERR_FORMAT", "beyond /tokens",
         set_ds("prompt_offsets", data=np.array([0, 3, 8, 12], np.int64)))
    case("offsets_length_mismatch.h5", "KS_ERR_FORMAT", "row_offsets",
         set_ds("row_offsets", data=np.array([0, 3, 8], np.int64)))
    case("offsets_float.h5", "KS_ERR_FORMAT", "attn_offsets",
         set_ds("attn_offsets", data=np.array([0, 6, 21, 22], np.float32), kind="f4"))
    case("rows_more_than_tokens.h5", "KS_ERR_FORMAT", "more rows",
         lambda s: (set_ds("row_offsets", data=np.array([0, 4, 8, 9], np.int64))(s)))
    case("prompt_lengths_too_long.h5", "KS_ERR_FORMAT", "prompt_lengths",
         set_ds("prompt_lengths", data=np.array([3, 6, 1], np.int32)))
    case("tokens_missing.h5", "KS_ERR_FORMAT", "/tokens", lambda s: s["ds"].pop("tokens"))
    case("token_out_of_vocab.h5", "KS_ERR_FORMAT", "vocabulary",
         set_ds("tokens", data=np.where(np.arange(9) == 4, 99,
                                        spec0["ds"]["tokens"].data).astype(np.int32)))

    # --- rows
    rp = spec0["ds"]["row_positions"].data
    case("row_positions_out_of_range.h5", "KS_ERR_FORMAT", "row_positions",
         set_ds("row_positions", data=np.where(np.arange(9) == 7, 5, rp).astype(np.int32)))
    case("row_positions_not_increasing.h5", "KS_ERR_FORMAT", "not increasing",
         set_ds("row_positions", data=np.array([0, 1, 2, 0, 1, 3, 2, 4, 0], np.int32)))
    st = spec0["ds"]["attn_row_starts"].data
    case("attn_row_starts_inconsistent.h5", "KS_ERR_FORMAT", "attn_row_starts",
         set_ds("attn_row_starts", data=np.where(np.arange(9) == 5, st + 1, st).astype(np.int64)))

    # --- activations
    pat = spec0["ds"]["activations/blocks.1.attn.hook_pattern"].data
    case("attention_k_short.h5", "KS_ERR_FORMAT", "shorter than",
         set_ds("activations/blocks.1.attn.hook_pattern", data=pat[:, :20].copy()))
    res = spec0["ds"]["activations/blocks.0.hook_resid_post"].data
    case("activation_rows_short.h5", "KS_ERR_FORMAT", "rows",
         set_ds("activations/blocks.0.hook_resid_post", data=res[:5].copy()))
    case("activation_int_type.h5", "KS_ERR_FORMAT", "not f32, f16 or bf16",
         set_ds("activations/blocks.0.hook_resid_post", data=(res * 100).astype(np.int32),
                kind="i4"))
    case("activation_wrong_rank.h5", "KS_ERR_FORMAT", "rank",
         set_ds("activations/blocks.0.hook_resid_post", data=res.reshape(-1).copy()))
    case("activation_wrong_width.h5", "KS_ERR_FORMAT", "d_model",
         set_ds("activations/blocks.0.hook_resid_post", data=res[:, :6].copy()))

    def rename(old, new):
        def m(spec):
            d = spec["ds"].pop(old)
            d.attrs["hook"] = new.split("/", 1)[1]
            spec["ds"][new] = d
        return m
    case("unknown_hook.h5", "KS_ERR_FORMAT", "not a hook point name",
         rename("activations/blocks.0.hook_resid_post", "activations/blocks.0.hook_banana"))
    case("hook_layer_out_of_range.h5", "KS_ERR_FORMAT", "layer 5",
         rename("activations/blocks.0.hook_resid_post", "activations/blocks.5.hook_resid_post"))

    def attr(name, key, value):
        def m(spec):
            if value is None:
                spec["ds"][name].attrs.pop(key)
            else:
                spec["ds"][name].attrs[key] = value
        return m
    case("heads_out_of_range.h5", "KS_ERR_FORMAT", "heads",
         attr("activations/blocks.1.attn.hook_pattern", "heads", np.array([0, 5], np.int32)))
    case("heads_length_mismatch.h5", "KS_ERR_FORMAT", "heads",
         attr("activations/blocks.1.attn.hook_z", "heads", np.array([1], np.int32)))
    case("kind_mismatch.h5", "KS_ERR_FORMAT", "kind",
         attr("activations/blocks.1.attn.hook_pattern", "kind", "token"))

    # --- logits
    case("topk_width_mismatch.h5", "KS_ERR_FORMAT", "topk_logprobs",
         set_ds("logits/topk_logprobs",
                data=spec0["ds"]["logits/topk_logprobs"].data[:, :2].copy()))

    with open(os.path.join(OUT, "EXPECTED.txt"), "w") as f:
        f.write("# written by make_dump_cases.py: case\texpected status\tsubstring of the first "
                "error (open, or walking every prompt and hook)\n")
        for name, status, sub in cases:
            f.write("%s\t%s\t%s\n" % (name, status, sub))
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    big = max(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print("wrote %d cases + 2 valid dumps in %s (%d bytes, largest %d)" % (len(cases), OUT, total, big))


if __name__ == "__main__":
    main()
