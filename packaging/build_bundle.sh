#!/usr/bin/env bash
# Build the one-folder bundle and check it: packaging/build_bundle.sh [cpu|cuda]
#
#   variant   cpu (default; trimmed, CPU-runnable) or cuda (full); or set CXR_BUNDLE_VARIANT
#   PYTHON    interpreter with the project and the [build] extra installed (default .venv/bin/python)
#   SKIP_SELFTEST=1  do not run the frozen self-test after the build
#
# Output: dist/<variant>/cxr-review/ (the bundle), dist/<variant>/build-report.json (size, build
# time, self-test result); the PyInstaller log is build/pyinstaller-<variant>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT="${1:-${CXR_BUNDLE_VARIANT:-cpu}}"
case "$VARIANT" in cpu|cuda) ;; *) echo "variant must be cpu or cuda (got '$VARIANT')" >&2; exit 2;; esac
PY="${PYTHON:-.venv/bin/python}"
DIST="dist/$VARIANT"
WORK="build/$VARIANT"
LOG="build/pyinstaller-$VARIANT.log"
BUNDLE="$DIST/cxr-review"
mkdir -p build "$DIST"

"$PY" - <<'EOF'
import importlib.metadata as md, sys
want = {"pyinstaller": "6.22.3", "pyinstaller-hooks-contrib": "2026.9", "torch": "2.14.1", "torchvision": "0.29.1"}
def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"
bad = {k: version(k) for k in want}
bad = {k: v for k, v in bad.items() if v.split("+")[0] != want[k]}
if bad:
    sys.exit(f"build_bundle: pinned versions differ: {bad} (want {want}); pip install -e '.[build]'")
EOF

echo "build_bundle: building the $VARIANT bundle (log: $LOG)"
t0=$(date +%s)
if ! CXR_BUNDLE_VARIANT="$VARIANT" "$PY" -m PyInstaller --noconfirm --clean --log-level INFO \
        --distpath "$DIST" --workpath "$WORK" build.spec >"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    echo "build_bundle: PyInstaller failed; full log in $LOG" >&2
    exit 1
fi
t1=$(date +%s)
BUILD_S=$((t1 - t0))

# Files the traps in the issue are about: fail the build, not the user's first launch.
missing=0
for f in _internal/torchvision/_C_stable.so _internal/torchvision/image_stable.so \
         _internal/PySide6/Qt/plugins/platforms/libqxcb.so _internal/PySide6/Qt/plugins/platforms/libqoffscreen.so \
         _internal/resources/bundle.json _internal/resources/selftest/manifest.json; do
    [ -e "$BUNDLE/$f" ] || { echo "build_bundle: missing in bundle: $f" >&2; missing=1; }
done
for d in pylibjpeg pylibjpeg_libjpeg pylibjpeg_openjpeg pylibjpeg_rle; do
    ls -d "$BUNDLE"/_internal/${d}-*.dist-info >/dev/null 2>&1 || { echo "build_bundle: no $d metadata (entry points) in bundle" >&2; missing=1; }
done
ls "$BUNDLE"/_internal/onnxruntime/capi/*.so >/dev/null 2>&1 || { echo "build_bundle: no onnxruntime binaries" >&2; missing=1; }
[ "$missing" = 0 ] || exit 1
[ -e "$BUNDLE/_internal/resources/models/demo-cxr.safetensors" ] \
    || echo "build_bundle: note: no demonstration model in resources/models (the app will say so)"

SIZE_B=$(du -sb "$BUNDLE" | cut -f1)
echo "build_bundle: $BUNDLE: $(du -sh "$BUNDLE" | cut -f1), built in ${BUILD_S}s"

SELFTEST_JSON="null"; SELFTEST_RC="null"; SELFTEST_S="null"
if [ "${SKIP_SELFTEST:-0}" != "1" ]; then
    tmp=$(mktemp -d)
    s0=$(date +%s)
    set +e
    CXR_CACHE_DIR="$tmp/cache" CXR_DATA_DIR="$tmp/data" QT_QPA_PLATFORM=offscreen \
        "$BUNDLE/cxr-desktop" --self-test >"$tmp/selftest.out" 2>"$tmp/selftest.err"
    SELFTEST_RC=$?
    set -e
    SELFTEST_S=$(( $(date +%s) - s0 ))
    SELFTEST_JSON=$(tail -n 1 "$tmp/selftest.out")
    echo "build_bundle: frozen self-test exit $SELFTEST_RC in ${SELFTEST_S}s: $SELFTEST_JSON"
    [ "$SELFTEST_RC" = 0 ] || tail -n 30 "$tmp/selftest.err" >&2
    "$PY" -c 'import json,sys; json.loads(sys.argv[1])' "$SELFTEST_JSON" 2>/dev/null || SELFTEST_JSON="null"
    rm -rf "$tmp"
fi

cat >"$DIST/build-report.json" <<EOF
{"variant": "$VARIANT", "bundle": "$BUNDLE", "bundle_bytes": $SIZE_B, "build_seconds": $BUILD_S,
 "selftest_exit": $SELFTEST_RC, "selftest_seconds": $SELFTEST_S, "selftest": $SELFTEST_JSON}
EOF
echo "build_bundle: report in $DIST/build-report.json"
[ "$SELFTEST_RC" = "null" ] || [ "$SELFTEST_RC" = 0 ]
