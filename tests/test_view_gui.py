#!/usr/bin/python3
"""test_view_gui.py — the GTK4 viewer (`koalascope view`, gui/viewer/) under Xvfb, driven by its
hidden --self-test entry: it opens a file, shows every page that has something to show, saves
a screenshot of each (GTK's own renderer: widget → render node → GdkTexture → PNG), exports
one view as PNG/SVG/PDF and exits 0 only when every page drew and nothing logged a GLib/GTK
warning or critical (G_DEBUG=fatal-criticals makes a critical abort the run, too).

Usage (meson passes these): test_view_gui.py KOALASCOPE [KOALASCOPE_VIEW]   (TAP on stdout)

  1. `koalascope` itself links no GTK (ldd), and `koalascope view` exits 1 naming a missing
     file or a viewer that is not there;
  2. a stories260K dump recorded here with `koalascope record` (2 prompts, residual stream and
     attention patterns, 8 generated tokens), with a second dump for the compare page: every
     page of a dump (tokens, attention grid, head, head zoomed, attention from and to a token,
     residual norms, logit lens, compare) is saved, and each PNG is decoded here (zlib only)
     and shows more than a message (see drawn() below: colour, not a share of inked pixels);
     an empty window's page, which shows only a message, is checked to be judged blank;
  3. the window's state (size, last page) is written to $XDG_CONFIG_HOME/koalascope/viewer.ini;
  4. the stories260K checkpoint opened as a model: the self-test runs a prompt live (worker
     thread, recorded into a temporary dump) and the same pages are saved;
  5. a file that is not a dump exits the self-test with status 1 naming it;
  6. an audit directory (`koalascope audit` on 12 CrowS-Pairs items of the shared data, the
     first audit of tests/reference/fixtures/audit/spec.json): the scores and items pages; it
     has no drill-down, so activating an item shows a toast saying how to record one;
  7. an audit directory with a drill-down (6 BBQ Age items, `"record"` of the 2 items with the
     largest contrast, residual stream + attention patterns, attributions): the self-test
     activates the items in order as a click does until one opens its internals, and the
     pages of that item's prompts (tokens, attention grid, head, residual norms, its
     attribution) draw beside the audit pages; then the same through the keyboard
     (--self-test-keys: real key presses through the X server's XTEST extension, into the
     focused items page): Down from the top to an item that was not recorded, Enter (the toast
     says how to record it), Down or Up to a recorded one, Enter: its internals open at its
     prompt and the pages draw. Each key must have its effect, so the keyboard path is what
     opened the item (a viewer built without gtk4-x11 and libXtst: a visible SKIP).

Needs xvfb-run and dbus-run-session (a session bus, which GtkApplication asks for), the viewer
built (meson option gui) and the stories260K shared data; each missing one is a visible SKIP,
and a failure under CI=true.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

from ks_tap import diag, ok, plan, skip

CI = os.environ.get("CI") == "true"
HERE = os.path.dirname(os.path.abspath(__file__))
KS = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build/cli/koalascope"
VIEWER = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else None
DATA = os.environ.get("KS_SHARED_DATA") or os.path.join(
    os.environ.get("KS_SOURCE_ROOT", os.path.dirname(HERE)), "..", "shared", "data")
DATA = os.path.abspath(DATA)

DUMP_PAGES = ["tokens", "attention-grid", "head", "attention", "residual", "lens", "compare",
              "head-zoomed", "attention-to"]


def missing(what):
    """A visible SKIP of the whole test, or a failure under CI=true."""
    if CI:
        ok(False, "%s (CI=true requires it)" % what)
    else:
        skip(what)
    plan()
    sys.exit(1 if CI else 0)


def read_png(path):
    """(width, height, pixels) of an 8-bit RGB/RGBA non-interlaced PNG; pixels a list of rows
    of bytes (RGBA or RGB). Only what GDK and cairo write is supported."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("%s: not a PNG" % path)
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or ctype not in (2, 6) or interlace:
                raise ValueError("%s: PNG kind %d/%d/%d unsupported" % (path, depth, ctype, interlace))
            bpp = 4 if ctype == 6 else 3
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 255
            elif ftype == 2:
                line[x] = (line[x] + b) & 255
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, rows, bpp


# What a page must show to count as drawn. A page with nothing to show (no data, a load error,
# "not recorded") draws only a message (draw_message, gui/viewer/ks_view_pages.c): grey text
# centred on white. The share of pixels it inks depends on the text and on the canvas size, and
# so does a correct page's: at 1019 px wide, messages ink 0.4-0.9% of the canvas, the tokens
# page of one 13-token prompt 2.0-2.1% (the canvas 678 or 632 px high), of a 3-token prompt
# 0.9%. No bound on that share separates the two. Colour does: every view draws its values
# through a colormap or in coloured marks (fewest here: the audit forest, ~3,400 pixels),
# while a message and a blank page have no chromatic pixel at all. The count is of pixels, not
# a share of the canvas, so the window's size does not move it. The exception is the audit
# items table, drawn in greys until a row is selected or shaded: it must ink TABLE_MIN_INK of
# its canvas (15-20% here, ten times a message).
CHROMA_SPREAD = 48      # a pixel is chromatic when max(R,G,B) - min(R,G,B) >= this
MIN_CHROMATIC = 1000    # chromatic pixels a page must have (a message-only page: 0)
GREY_PAGES = {"items"}  # pages drawn in greys by design, checked by their inked share instead
TABLE_MIN_INK = 0.05


def page_pixels(path):
    """(chromatic pixels, share of pixels that differ from the most common colour, number of
    colours). Decoded by Pillow where it is installed (CI: it comes with python3-matplotlib),
    every pixel counted; else by read_png (pure Python, slower), every 2nd pixel of every 2nd
    row counted and the chromatic count scaled by 4."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        img = Image.open(path)
        img.load()
        if img.format != "PNG":
            raise ValueError("%s: not a PNG" % path)
        img = img.convert("RGB")
        w, h = img.size
        colours = img.getcolors(maxcolors=w * h)
        step = 1
    else:
        w, h, rows, bpp = read_png(path)
        counts = {}
        for y in range(0, h, 2):
            r = rows[y]
            for x in range(0, w, 2):
                px = r[x * bpp:x * bpp + 3]
                counts[px] = counts.get(px, 0) + 1
        colours = [(c, tuple(px)) for px, c in counts.items()]
        step = 2
    total = sum(c for c, _ in colours)
    chromatic = sum(c for c, px in colours if max(px) - min(px) >= CHROMA_SPREAD) * step * step
    return chromatic, (total - max(c for c, _ in colours)) / total, len(colours)


def drawn(page, png):
    """(whether the screenshot png of page shows more than a message, what was measured)."""
    chromatic, inked, ncol = page_pixels(png)
    what = "%d chromatic pixels, %.1f%% inked, %d colours" % (chromatic, 100 * inked, ncol)
    if page in GREY_PAGES:
        return inked >= TABLE_MIN_INK, what + "; a table: needs %.0f%% inked" % (100 * TABLE_MIN_INK)
    return chromatic >= MIN_CHROMATIC, what + "; needs %d chromatic" % MIN_CHROMATIC


def viewer_env(tmp):
    # no animations: the live prompt bar slides in (GtkRevealer, 250 ms) when a model opens,
    # and the first frame of a page could catch it before it had, the canvas 46 px taller
    gtk_dir = os.path.join(tmp, "config", "gtk-4.0")
    os.makedirs(gtk_dir, exist_ok=True)
    with open(os.path.join(gtk_dir, "settings.ini"), "w") as f:
        f.write("[Settings]\ngtk-enable-animations=false\n")
    env = dict(os.environ)
    env.update({
        "G_DEBUG": "fatal-criticals",
        "GSK_RENDERER": "cairo",      # the same pixels whatever GL the X server has
        "GTK_A11Y": "none",           # no accessibility bus to start
        "XDG_CONFIG_HOME": os.path.join(tmp, "config"),
        "KS_VIEWER": VIEWER,
        "NO_AT_BRIDGE": "1",
    })
    return env


def self_test(args, out, tmp, timeout=120, show=False, env=None):
    cmd = ["dbus-run-session", "--", "xvfb-run", "-a", "-s", "-screen 0 1400x1000x24",
           KS, "view"] + args + ["--self-test", out]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=dict(viewer_env(tmp), **(env or {})), timeout=timeout)
    if show:
        diag(p.stdout.strip())
        if p.returncode != 0:
            diag(p.stderr.strip()[-3000:])
    return p


def run_audit(spec, run_dir):
    """koalascope audit on spec (a dict, written beside run_dir) into run_dir."""
    spec_path = run_dir + ".spec.json"
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    return subprocess.run([KS, "audit", spec_path, "-o", run_dir, "--quiet"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, KS_SHARED_DATA=DATA))


def check_pages(out, pages, what):
    for page in pages:
        png = os.path.join(out, page + ".png")
        if not ok(os.path.exists(png), "%s: page %s saved a screenshot" % (what, page)):
            continue
        try:
            good, measured = drawn(page, png)
        except ValueError as exc:
            ok(False, "%s: page %s: %s" % (what, page, exc))
            continue
        ok(good, "%s: page %s is not blank (%s)" % (what, page, measured))


def keyboard_drill(run_dir, rows, tmp, pages, n_items=6):
    """Section 7 through the keyboard: rows maps the recorded items (report.md's drill-down
    table) to their first prompt; the items page lists all n_items, in order, none selected."""
    unrecorded = [i for i in range(n_items) if i not in rows]
    if not rows or not unrecorded:
        ok(False, "keys: the audit has recorded and unrecorded items (recorded: %s)" % sorted(rows))
        return
    # Down from the top (the first Down selects item 0) to an item without internals, Enter;
    # then to a recorded item, below it if one is (Down), else above it (Up), Enter
    u = unrecorded[0]
    below = [r for r in sorted(rows) if r > u]
    r = below[0] if below else max(rows)
    move = ["Down"] * (r - u) if r > u else ["Up"] * (u - r)
    keys = ["Down"] * (u + 1) + ["Return"] + move + ["Return"]
    want_selected = list(range(u + 1)) + (list(range(u + 1, r + 1)) if r > u else list(range(u - 1, r - 1, -1)))
    out = os.path.join(tmp, "shots-keys")
    p = self_test([run_dir, "--self-test-keys", ",".join(keys)], out, tmp, show=True,
                  env={"GDK_BACKEND": "x11"})  # XTEST: the X server Xvfb is, never a Wayland session's
    if "cannot type keys" in p.stderr:
        why = p.stderr.strip().splitlines()[-1]
        if CI:
            ok(False, "keys: %s (CI=true requires it)" % why)
        else:
            skip("keys: %s" % why)
        return
    diag("keys typed: %s" % ",".join(keys))
    ok(p.returncode == 0 and "self-test: ok" in p.stdout and "log warnings/criticals 0" in p.stdout
       and "has the keyboard focus" in p.stdout,
       "keys: the self-test passes typing %d keys into the focused items page" % len(keys))
    selected = [int(x) for x in re.findall(r"key (?:Down|Up): item (\d+) selected", p.stdout)]
    ok(selected == want_selected,
       "keys: each Down/Up moved the selection by one row from the top (%s, wanted %s)"
       % (selected, want_selected))
    m = re.search(r"item (\d+): toast: (.*) \(key Return\)", p.stdout)
    ok(m is not None and int(m.group(1)) == u and m.group(2).startswith("item ") and
       '"record"' in m.group(2) and "Drill-down" in m.group(2),
       "keys: Enter on item %d (no internals) toasts how to record them" % u)
    m = re.search(r"item (\d+): internals opened at prompt (\d+) \(key Return\)", p.stdout)
    ok(m is not None and int(m.group(1)) == r and int(m.group(2)) == rows[r],
       "keys: Enter on item %d opened its internals at its own prompt (report.md: %d, viewer: %s)"
       % (r, rows[r], m.group(0) if m else None))
    check_pages(out, pages, "keys")


def main():
    if not os.access(KS, os.X_OK):
        missing("no koalascope program at %s" % KS)
    # 1. no GTK in the CLI
    ldd = subprocess.run(["ldd", KS], stdout=subprocess.PIPE, text=True)
    ok(ldd.returncode == 0 and "libgtk" not in ldd.stdout and "libadwaita" not in ldd.stdout,
       "koalascope links no GTK (ldd)")
    p = subprocess.run([KS, "view", "/nonexistent/d.h5"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    ok(p.returncode == 1 and "/nonexistent/d.h5" in p.stderr, "view: a missing file exits 1 naming it")
    env = dict(os.environ, KS_VIEWER="/nonexistent/koalascope-view")
    p = subprocess.run([KS, "view"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ok(p.returncode == 1 and "not built" in p.stderr and "gtk" in p.stderr.lower(),
       "view: a viewer that is not there exits 1 saying how to build it")

    if not VIEWER or not os.access(VIEWER, os.X_OK):
        missing("the viewer koalascope-view was not built (meson option gui: needs gtk4, libadwaita-1)")
    for tool in ("xvfb-run", "dbus-run-session"):
        if not shutil.which(tool):
            missing("%s not installed (scripts/install-deps: xvfb, dbus)" % tool)
    model = os.path.join(DATA, "stories260K", "stories260K.bin")
    tok = os.path.join(DATA, "stories260K", "tok512.bin")
    if not os.path.exists(model):
        missing("stories260K missing at %s; set KS_SHARED_DATA" % DATA)

    tmp = tempfile.mkdtemp(prefix="ks-view-test-")
    try:
        prompts = os.path.join(tmp, "prompts.txt")
        with open(prompts, "w") as f:
            f.write("Once upon a time there was a little dog.\nThe sun was warm and the park was big.\n")
        dump, dump2 = os.path.join(tmp, "d.h5"), os.path.join(tmp, "d2.h5")
        for path, extra in ((dump, []), (dump2, ["--temperature", "1", "--seed", "5"])):
            r = subprocess.run([KS, "record", model, "--tokenizer", tok, "--prompts", prompts,
                                "--hooks", "blocks.*.hook_resid_post,blocks.*.attn.hook_pattern",
                                "--generate", "8", "-q", "-o", path] + extra,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if not ok(r.returncode == 0, "record %s" % os.path.basename(path)):
                diag(r.stderr)
                plan()
                return 1

        # 2. what the check below calls blank: an empty window's only page, a message
        ref = os.path.join(tmp, "shots-empty")
        p = self_test([], ref, tmp)
        png = os.path.join(ref, "tokens.png")
        good, measured = drawn("tokens", png) if os.path.exists(png) else (True, "no screenshot")
        ok(p.returncode == 0 and not good,
           "a page that shows only a message is judged blank (%s)" % measured)

        # every page of a dump
        out = os.path.join(tmp, "shots")
        p = self_test([dump, "--compare", dump2], out, tmp)
        diag(p.stdout.strip())
        if p.returncode != 0:
            diag(p.stderr.strip()[-3000:])
        ok(p.returncode == 0 and "self-test: ok" in p.stdout,
           "dump: the self-test passes (every page drawn, no GTK warning or critical)")
        ok("log warnings/criticals 0" in p.stdout, "dump: nothing logged a warning or critical")
        check_pages(out, DUMP_PAGES, "dump")
        for ext, magic in (("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")):
            path = os.path.join(out, "export." + ext)
            head = open(path, "rb").read(5) if os.path.exists(path) else b""
            ok(head.startswith(magic), "dump: the view exported as %s" % ext.upper())

        # 3. remembered state
        ini = os.path.join(tmp, "config", "koalascope", "viewer.ini")
        text = open(ini).read() if os.path.exists(ini) else ""
        ok("[window]" in text and "width=" in text and "page=attention" in text,
           "the window state (size, last page) is kept in viewer.ini")

        # 4. a model, run live
        out2 = os.path.join(tmp, "shots-model")
        p = self_test([model, "--tokenizer", tok], out2, tmp)
        diag(p.stdout.strip())
        if p.returncode != 0:
            diag(p.stderr.strip()[-3000:])
        ok(p.returncode == 0 and "live run done" in p.stdout and "self-test: ok" in p.stdout,
           "model: a prompt runs live and every page draws")
        check_pages(out2, [x for x in DUMP_PAGES if x != "compare"], "model")

        # 5. not a dump
        p = self_test([prompts], os.path.join(tmp, "shots-bad"), tmp)
        ok(p.returncode == 1 and "prompts.txt" in p.stderr,
           "a file that is not a dump fails the self-test naming it")

        # 6. audit results
        with open(os.path.join(HERE, "reference", "fixtures", "audit", "spec.json")) as f:
            spec = json.load(f)
        spec["audits"] = spec["audits"][:1]
        spec["audits"][0]["limit"] = 12
        data_files = [d.replace("${KS_SHARED_DATA}", DATA) for d in spec["audits"][0]["data"]]
        if not all(os.path.exists(d) for d in data_files):
            if CI:
                ok(False, "audit data missing (%s); CI=true requires it" % data_files)
            else:
                skip("audit data missing (%s)" % data_files)
        else:
            run_dir = os.path.join(tmp, "audit")
            r = run_audit(spec, run_dir)
            if ok(r.returncode == 0, "audit of 12 CrowS-Pairs items"):
                out3 = os.path.join(tmp, "shots-audit")
                p = self_test([run_dir], out3, tmp, show=True)
                ok(p.returncode == 0 and "self-test: 2 pages" in p.stdout and "self-test: ok" in p.stdout,
                   "audit: the scores and items pages draw")
                ok("item 0: toast: item" in p.stdout and '"record"' in p.stdout and
                   "Drill-down" in p.stdout and "internals opened" not in p.stdout,
                   "audit without drill-down: activating an item toasts how to record its internals")
                check_pages(out3, ["audit", "items"], "audit")
            else:
                diag(r.stderr[-2000:])

        # 7. audit results with a drill-down
        bbq = os.path.join(DATA, "bbq", "Age.jsonl")
        if not os.path.exists(bbq):
            if CI:
                ok(False, "BBQ data missing (%s); CI=true requires it" % bbq)
            else:
                skip("BBQ data missing (%s)" % bbq)
        else:
            spec = {"model": "${KS_SHARED_DATA}/stories260K/stories260K.bin",
                    "tokenizer": "${KS_SHARED_DATA}/stories260K/tok512.bin",
                    "audits": [{"kind": "bbq", "data": "${KS_SHARED_DATA}/bbq/Age.jsonl", "limit": 6,
                                "record": {"hooks": "blocks.*.hook_resid_post,blocks.*.attn.hook_pattern",
                                           "items": 2}}]}
            run_dir = os.path.join(tmp, "audit-drill")
            r = run_audit(spec, run_dir)
            if ok(r.returncode == 0 and os.path.exists(os.path.join(run_dir, "drilldown", "bbq.h5")),
                  "audit of 6 BBQ items with a drill-down of 2"):
                out4 = os.path.join(tmp, "shots-drill")
                p = self_test([run_dir], out4, tmp, show=True)
                ok(p.returncode == 0 and "internals opened" in p.stdout and "self-test: ok" in p.stdout
                   and "log warnings/criticals 0" in p.stdout,
                   "drill-down: an item's internals open and every page draws, no GTK warning")
                # the prompt it opened is the item's first in the audit's own report.md table
                m = re.search(r"item (\d+): internals opened at prompt (\d+)", p.stdout)
                rows = {}
                with open(os.path.join(run_dir, "report.md")) as f:
                    for line in f:
                        cells = [c.strip() for c in line.strip().strip("|").split("|")]
                        if len(cells) == 8 and cells[0].isdigit():
                            rows[int(cells[0])] = int(cells[5].split(",")[0])
                ok(m is not None and int(m.group(1)) in rows and rows[int(m.group(1))] == int(m.group(2)),
                   "drill-down: the item opened at its own prompt (report.md: %s, viewer: %s)"
                   % (rows, m.group(0) if m else None))
                drill_pages = ["audit", "items", "tokens", "attention-grid", "head", "residual",
                               "attribution"]
                check_pages(out4, drill_pages, "drill-down")
                keyboard_drill(run_dir, rows, tmp, drill_pages)
            else:
                diag(r.stderr[-2000:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    plan()
    return 0


if __name__ == "__main__":
    sys.exit(main())
