#!/usr/bin/env bash
# Renders a results directory's compare.html (written by `sockload report
# DIR --html DIR/compare.html`, see scripts/compare.sh) in headless Chromium
# and checks that the rendering is real: the screenshot is a PNG of the
# window's size, not blank or uniform, showing the chart's bar colours when
# the page has a chart; the DOM Chromium built has every table and heading
# of the page and the chart inline.
#
# Usage: scripts/render-check.sh [--png FILE] [--width PX] [--height PX] RESULTS_DIR
#
#   --png FILE    where the screenshot goes           [RESULTS_DIR/compare.png]
#   --width PX    window width                        [1480]
#   --height PX   window height      [the chart's height + 240, or 1200 without]
#
# Chromium is $CHROMIUM, else the first of chromium, chromium-browser,
# google-chrome on PATH (Debian: apt-get install -y chromium). It runs with
# a fresh profile in a temp dir (removed afterwards), no network services,
# at most 60 s per run. Exit status: 0 the rendering checks out, 1 it does
# not (the reason on stderr), 2 usage, 3 no Chromium found.
set -euo pipefail

die() { echo "render-check.sh: $*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

PNG='' WIDTH=1480 HEIGHT='' DIR=''
while (($#)); do
    case $1 in
        --png) PNG=${2:?--png needs a file}; shift ;;
        --width) WIDTH=${2:?--width needs pixels}; shift ;;
        --height) HEIGHT=${2:?--height needs pixels}; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "render-check.sh: unknown flag $1" >&2; usage >&2; exit 2 ;;
        *) [[ -z $DIR ]] || { echo "render-check.sh: one RESULTS_DIR only" >&2; exit 2; }
            DIR=$1 ;;
    esac
    shift
done
[[ -n $DIR ]] || { usage >&2; exit 2; }
for v in "$WIDTH" ${HEIGHT:+"$HEIGHT"}; do
    [[ $v =~ ^[1-9][0-9]{1,4}$ ]] || { echo "render-check.sh: not a size in pixels: $v" >&2; exit 2; }
done
HTML=$DIR/compare.html
[[ -f $HTML ]] || die "$HTML: no such file (run: sockload report $DIR --html $HTML)"
HTML=$(cd "$(dirname "$HTML")" && pwd)/compare.html
PNG=${PNG:-$DIR/compare.png}
command -v python3 > /dev/null || die "python3 is needed"

CHROMIUM=${CHROMIUM:-}
if [[ -z $CHROMIUM ]]; then
    for c in chromium chromium-browser google-chrome; do
        if command -v "$c" > /dev/null; then CHROMIUM=$(command -v "$c"); break; fi
    done
fi
if [[ -z $CHROMIUM || ! -x $CHROMIUM ]]; then
    echo "render-check.sh: no Chromium found (Debian: apt-get install -y chromium; or set CHROMIUM)" >&2
    exit 3
fi

if [[ -z $HEIGHT ]]; then
    svg_h=$(grep -m1 -o '<svg width="[0-9]*" height="[0-9]*"' "$HTML" | grep -o '[0-9]*"$' | tr -d '"') || true
    HEIGHT=$((${svg_h:-960} + 240))
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/render-check.XXXXXX")
CHROME_PID=''
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # Chromium's helpers share its process group, which setsid made its pid.
    [[ -n $CHROME_PID ]] && kill -KILL -- "-$CHROME_PID" 2>/dev/null
    [[ -n $CHROME_PID ]] && { wait "$CHROME_PID" 2>/dev/null || true; }
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# chromium OUT ARGS...: one headless run, stdout to OUT, a fresh profile,
# killed (with its whole process group) after 60 s.
chromium() {
    local out=$1 i rc=0
    shift
    rm -rf "$TMP/profile"
    mkdir "$TMP/profile"
    setsid "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$TMP/profile" --hide-scrollbars "$@" "file://$HTML" \
        > "$out" 2> "$TMP/chromium.err" &
    CHROME_PID=$!
    for ((i = 0; i < 600; i++)); do
        kill -0 "$CHROME_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$CHROME_PID" 2>/dev/null; then
        kill -KILL -- "-$CHROME_PID" 2>/dev/null || true
        wait "$CHROME_PID" 2>/dev/null || true
        CHROME_PID=
        die "$CHROMIUM did not finish within 60 s: $(tail -c 300 "$TMP/chromium.err" | tr '\n' ' ')"
    fi
    wait "$CHROME_PID" || rc=$?
    kill -KILL -- "-$CHROME_PID" 2>/dev/null || true # helpers left behind, if any
    CHROME_PID=
    ((rc == 0)) || die "$CHROMIUM exited with $rc: $(tail -c 300 "$TMP/chromium.err" | tr '\n' ' ')"
}

rm -f "$PNG"
chromium "$TMP/shot.out" --window-size="$WIDTH,$HEIGHT" --screenshot="$(realpath -m "$PNG")"
[[ -s $PNG ]] || die "$CHROMIUM wrote no screenshot to $PNG: $(tail -c 300 "$TMP/chromium.err" | tr '\n' ' ')"
chromium "$TMP/dom.html" --dump-dom

python3 - "$HTML" "$PNG" "$TMP/dom.html" "$WIDTH" "$HEIGHT" <<'EOF'
"""Checks the screenshot and the dumped DOM against the page."""
import collections
import html as htmlmod
import re
import struct
import sys
import zlib

page_path, png_path, dom_path, want_w, want_h = sys.argv[1:6]
want_w, want_h = int(want_w), int(want_h)


def fail(msg):
    print(f"render-check.sh: {msg}", file=sys.stderr)
    sys.exit(1)


def decode_png(path):
    """(width, height, bytes per pixel, rows) of an 8-bit, non-interlaced PNG."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(f"{path}: not a PNG")
    pos, idat, ihdr = 8, [], None
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    if ihdr is None:
        fail(f"{path}: no IHDR chunk")
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or interlace or ctype not in (2, 6):
        fail(f"{path}: unexpected PNG format (depth {depth}, colour type {ctype}, interlace {interlace})")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    if len(raw) != h * (stride + 1):
        fail(f"{path}: {len(raw)} bytes of image data, expected {h * (stride + 1)}")
    prev, rows = bytearray(stride), []
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        elif f != 0:
            fail(f"{path}: row {y} has unknown filter {f}")
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


page = open(page_path, encoding="utf-8").read()
w, h, bpp, rows = decode_png(png_path)
if (w, h) != (want_w, want_h):
    fail(f"{png_path}: {w}x{h} pixels, expected the window's {want_w}x{want_h}")
colours = collections.Counter()
for row in rows:
    colours.update(row[i:i + 3] for i in range(0, len(row), bpp))
background, bg_count = colours.most_common(1)[0]
ink = 1 - bg_count / (w * h)
if len(colours) < 16 or ink < 0.005:
    fail(f"{png_path}: blank or uniform: {len(colours)} colours, {ink:.2%} not background")

svg = re.search(r"<svg\b.*?</svg>", page, re.S)
fills = set()
if svg:
    for m in re.finditer(r'<rect\b[^>]*\bfill="#([0-9A-Fa-f]{6})"', svg.group(0)):
        if m.group(1).upper() != "FFFFFF":
            fills.add(bytes.fromhex(m.group(1)))
    seen = [f for f in fills if colours[f] >= 20]
    if len(seen) < min(2, len(fills)):
        fail(f"{png_path}: the chart did not render: {len(seen)} of its {len(fills)} fill colours seen")

dom = open(dom_path, encoding="utf-8", errors="replace").read()


def texts(pattern, doc):
    """The unescaped contents of every match (Chromium re-serialises entities)."""
    return collections.Counter(htmlmod.unescape(t) for t in re.findall(pattern, doc, re.S))


if dom.count("<table") != page.count("<table"):
    fail(f"the DOM has {dom.count('<table')} tables, the page {page.count('<table')}")
for what, pattern in (("heading", r"<h[12]>(.*?)</h[12]>"), ("table cell", r"<t[hd]\b[^>]*>(.*?)</t[hd]>")):
    want, got = texts(pattern, page), texts(pattern, dom)
    missing = want - got
    if missing:
        fail(f"the DOM lacks {sum(missing.values())} of the page's {sum(want.values())} {what}s, "
             f"e.g. {next(iter(missing))!r}")
cells = sum(texts(r"<t[hd]\b[^>]*>(.*?)</t[hd]>", page).values())
if svg and "<svg" not in dom:
    fail("the DOM has no inline SVG")
print(f"render-check: {png_path}: {w}x{h}, {len(colours)} colours, {ink:.1%} not background"
      + (f", {len(seen)} of the chart's {len(fills)} fill colours seen" if svg else ", no chart")
      + f"; DOM: {dom.count('<table')} tables, {cells} cells"
      + (", the chart inline" if svg else ""))
EOF
