#!/usr/bin/env python3
"""make_probe_fixtures.py — the scikit-learn oracle for probes/probe.c (tests/test_probe.c).

Writes tests/reference/fixtures/probe/:
  data.safetensors  the inputs, little-endian, written here with numpy alone (8-byte header
                    length, sorted JSON header, raw data), read in C with tests/st_read.h:
                      bin.X F32 [240, 12], bin.y I32 [240]      binary logistic
                      multi.X F32 [240, 10], multi.y I32 [240]  3-class logistic
                      ridge.X F32 [200, 15], ridge.target F32 [200]
                      auroc.<i>.score F32 [n], auroc.<i>.y I32 [n]  (i = 0, 1, 2)
  expected.json     what sklearn 1.2.1 computes on them (floats printed with repr: exact)

Features have unequal means (U(-3, 3)) and scales (U(0.3, 3)) so that standardising matters,
and the last feature of bin.X is constant (StandardScaler gives it scale 1). Every fit runs on
X.astype(float64) (exactly the stored float32 values; Ridge would otherwise solve in float32).

Fits, each at two regularisations and with and without standardisation:
  LogisticRegression(C=C, solver="lbfgs", tol=1e-10, max_iter=10000), C in {0.1, 10}
      (multi_class="multinomial" for the 3-class data; the binary data get sklearn's one
      weight vector)
  Ridge(alpha=alpha, solver="cholesky"), alpha in {0.5, 50}
For the logistic fits the JSON also has coef_opt / intercept_opt, the optimum polished further
(tight_optimum: sklearn's own stop, ftol = 64 eps, leaves up to 4e-4 relative in the
ill-conditioned unstandardised cases), and the max |gradient| at both.
With standardisation: StandardScaler().fit(X) then the model on scaler.transform(X);
coef = coef_std / scale and intercept = intercept_std − coef·mean (the unstandardised
units that ks_probe_fit reports); the JSON keeps both, with mean_ and scale_. "score" is the
training accuracy (logistic) or training R² (ridge) of the fitted model.

AUROC cases: roc_auc_score on scores with many ties (rounded to 0.5), on distinct scores, and
on all-equal scores (0.5).

Run with the system python (Debian python3-sklearn 1.2.1, python3-numpy 1.24.2; the script
checks the versions, --any-version overrides):

    /usr/bin/python3 tests/reference/make_probe_fixtures.py

Seeded (numpy default_rng(20240917)); a rerun with the pinned versions rewrites the same bytes.
"""
import argparse
import json
import os
import struct
import sys

PINNED = {"sklearn": "1.2.1", "numpy": "1.24."}
SEED = 20240917
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "probe")


def check_versions(any_version):
    import numpy
    import sklearn

    bad = []
    if sklearn.__version__ != PINNED["sklearn"]:
        bad.append("sklearn %s (want %s)" % (sklearn.__version__, PINNED["sklearn"]))
    if not numpy.__version__.startswith(PINNED["numpy"]):
        bad.append("numpy %s (want %s*)" % (numpy.__version__, PINNED["numpy"]))
    if bad and not any_version:
        sys.exit("make_probe_fixtures: wrong versions: %s (--any-version to run anyway)" % ", ".join(bad))
    return {"sklearn": sklearn.__version__, "numpy": numpy.__version__}


def write_safetensors(path, tensors, metadata):
    """tensors: name -> numpy array (float32 or int32), written in sorted name order."""
    import numpy as np

    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        dt = {np.dtype("float32"): "F32", np.dtype("int32"): "I32"}[a.dtype]
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {k: str(v) for k, v in sorted(metadata.items())}
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def features(rng, n, d):
    """Rows with unequal means and scales; also their standardised version (for the labels)."""
    import numpy as np

    mean = rng.uniform(-3, 3, size=d)
    scale = rng.uniform(0.3, 3, size=d)
    Z = rng.standard_normal((n, d))
    X = (Z * scale + mean).astype(np.float32)
    return X, Z


def make_data(rng):
    import numpy as np

    X, Z = features(rng, 240, 12)
    X[:, 11] = np.float32(2.5)  # a constant feature
    w = rng.standard_normal(11)
    logit = Z[:, :11] @ w * 0.8 + rng.logistic(size=240)
    ybin = (logit > 0).astype(np.int32)
    bin_ = (X, ybin)

    X, Z = features(rng, 240, 10)
    W = rng.standard_normal((10, 3))
    ymul = np.argmax(Z @ W + rng.gumbel(size=(240, 3)), axis=1).astype(np.int32)
    multi = (X, ymul)

    X, Z = features(rng, 200, 15)
    w = rng.standard_normal(15)
    t = (Z @ w + 3.0 + 0.5 * rng.standard_normal(200)).astype(np.float32)
    ridge = (X, t)
    return bin_, multi, ridge


def tight_optimum(Xf, y, C, coef0, b0):
    """The logistic optimum to ~1e-9 in the gradient: scipy's L-BFGS-B from sklearn's solution
    with its relative-reduction stop off (sklearn stops at ftol = 64 eps, which on the
    unstandardised, ill-conditioned cases leaves the coefficients up to ~4e-4 off). Objective
    as sklearn's, divided by n. Softmax intercepts centred. Returns (coef [K, d], intercept [K],
    max |gradient| at sklearn's solution, at this one)."""
    import numpy as np
    from scipy.optimize import minimize

    n, d = Xf.shape
    K = coef0.shape[0]

    def fg(p):
        W, b = p[:K * d].reshape(K, d), p[K * d:]
        Z = Xf @ W.T + b
        if K == 1:
            z = Z[:, 0]
            loss = np.logaddexp(0, z).sum() - (y * z).sum()
            R = (1 / (1 + np.exp(-z)) - y)[:, None]
        else:
            m = Z.max(1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(Z - m).sum(1))
            Y = np.eye(K)[y]
            loss = (lse - (Z * Y).sum(1)).sum()
            R = np.exp(Z - lse[:, None]) - Y
        f = loss / n + (W ** 2).sum() / (2 * C * n)
        g = np.concatenate([(R.T @ Xf / n + W / (C * n)).ravel(), R.sum(0) / n])
        return f, g

    p0 = np.concatenate([coef0.ravel(), b0])
    r = minimize(fg, p0, jac=True, method="L-BFGS-B",
                 options=dict(gtol=1e-14, ftol=0, maxiter=100000, maxcor=30))
    W, b = r.x[:K * d].reshape(K, d), r.x[K * d:]
    if K > 1:
        b = b - b.mean()
    return W, b, float(np.abs(fg(p0)[1]).max()), float(np.abs(fg(r.x)[1]).max())


def fit_case(kind, X32, y, reg, standardize):
    import numpy as np
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    X = X32.astype(np.float64)
    if standardize:
        sc = StandardScaler().fit(X)
        Xf, mean, scale = sc.transform(X), sc.mean_, sc.scale_
    else:
        Xf, mean, scale = X, np.zeros(X.shape[1]), np.ones(X.shape[1])
    if kind == "ridge":
        m = Ridge(alpha=reg, solver="cholesky").fit(Xf, y.astype(np.float64))
        coef_std = np.atleast_2d(m.coef_)
        b_std = np.atleast_1d(m.intercept_)
        n_iter = 0
        score = m.score(Xf, y.astype(np.float64))
    else:
        mc = "multinomial" if kind == "multi" else "auto"
        m = LogisticRegression(C=reg, solver="lbfgs", tol=1e-10, max_iter=10000, multi_class=mc).fit(Xf, y)
        coef_std, b_std = m.coef_, m.intercept_
        n_iter = int(np.max(m.n_iter_))
        assert n_iter < 10000, "sklearn did not converge"
        score = m.score(Xf, y)
    coef = coef_std / scale
    b = b_std - coef @ mean
    out_opt = {}
    if kind != "ridge":
        w_opt, b_opt, g_sk, g_opt = tight_optimum(Xf, y, reg, coef_std, b_std)
        out_opt = {"coef_opt": (w_opt / scale).tolist(), "intercept_opt": (b_opt - (w_opt / scale) @ mean).tolist(),
                   "grad_inf_sklearn": g_sk, "grad_inf_opt": g_opt}
    return {**out_opt,
        "kind": kind,
        "reg": reg,
        "standardize": standardize,
        "coef": coef.tolist(),
        "intercept": b.tolist(),
        "coef_std": coef_std.tolist(),
        "intercept_std": b_std.tolist(),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "score": float(score),
        "n_iter": n_iter,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--any-version", action="store_true")
    args = ap.parse_args()
    versions = check_versions(args.any_version)
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(SEED)
    (bX, by), (mX, my), (rX, rt) = make_data(rng)
    tensors = {"bin.X": bX, "bin.y": by, "multi.X": mX, "multi.y": my, "ridge.X": rX, "ridge.target": rt}
    cases = []
    for kind, X, y, regs in (("binary", bX, by, (0.1, 10.0)), ("multi", mX, my, (0.1, 10.0)),
                             ("ridge", rX, rt, (0.5, 50.0))):
        for reg in regs:
            for std in (True, False):
                cases.append(fit_case(kind, X, y, reg, std))

    aurocs = []
    n = 500
    ya = (rng.random(n) < 0.4).astype(np.int32)
    sa = (np.round((rng.standard_normal(n) + 0.8 * ya) * 2) / 2).astype(np.float32)  # many ties
    yb = (rng.random(37) < 0.5).astype(np.int32)
    sb = (rng.standard_normal(37) + 0.5 * yb).astype(np.float32)
    yc = np.array([0, 1, 1, 0, 1, 0, 0, 1], dtype=np.int32)
    sc = np.full(8, 0.25, dtype=np.float32)
    for i, (s, y) in enumerate(((sa, ya), (sb, yb), (sc, yc))):
        tensors["auroc.%d.score" % i] = s
        tensors["auroc.%d.y" % i] = y
        aurocs.append(float(roc_auc_score(y, s.astype(np.float64))))

    os.makedirs(OUT, exist_ok=True)
    write_safetensors(os.path.join(OUT, "data.safetensors"), tensors,
                      {"seed": SEED, "sklearn": versions["sklearn"], "numpy": versions["numpy"]})
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"versions": versions, "seed": SEED, "fits": cases, "auroc": aurocs}, f, indent=1,
                  sort_keys=True)
        f.write("\n")
    for c in cases:
        print("%-6s reg %-5g std %-5s score %.4f iter %d |g| sklearn %.1e polished %.1e" % (
            c["kind"], c["reg"], c["standardize"], c["score"], c["n_iter"], c.get("grad_inf_sklearn", 0),
            c.get("grad_inf_opt", 0)))
    print("auroc", aurocs)


if __name__ == "__main__":
    main()
