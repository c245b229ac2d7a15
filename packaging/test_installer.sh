#!/usr/bin/env bash
# End-to-end installer test (root, Debian/Ubuntu; not part of the default pytest run: it takes
# ~7 minutes and ~10 GB of disk on a 2-core machine):
#   build the bundle and the .deb, install it with apt, run the installed --self-test, launch the
#   installed app under Xvfb and take a screenshot, remove the package and check nothing is left.
#
#   packaging/test_installer.sh [cpu|cuda]
#   REUSE_BUNDLE=1   skip the PyInstaller build when dist/<variant>/cxr-review exists
#   REUSE_DEB=1      also skip building the .deb when one exists
#   SCREENSHOT=path  where to save the screenshot (default out/installed-app-<variant>.png)
#   KEEP_INSTALLED=1 leave the package installed at the end
# Prints one JSON summary line at the end (times in seconds, sizes in bytes).
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT="${1:-${CXR_BUNDLE_VARIANT:-cpu}}"
PY="${PYTHON:-.venv/bin/python}"
SHOT="${SCREENSHOT:-out/installed-app-$VARIANT.png}"
T_START=$(date +%s)
[ "$(id -u)" = 0 ] || { echo "test_installer: run as root (it installs a package)" >&2; exit 2; }
log() { echo "test_installer: $*"; }
now() { date +%s.%N; }
since() { "$PY" -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))' "$1" "$(now)"; }

# --- 1. bundle ---------------------------------------------------------------------------------
t=$(now)
if [ "${REUSE_BUNDLE:-0}" = 1 ] && [ -x "dist/$VARIANT/cxr-review/cxr-desktop" ]; then
    log "reusing dist/$VARIANT/cxr-review"
else
    packaging/build_bundle.sh "$VARIANT"
fi
BUNDLE_S=$(since "$t")
BUNDLE_B=$(du -sb "dist/$VARIANT/cxr-review" | cut -f1)

# --- 2. .deb -------------------------------------------------------------------------------------
t=$(now)
DEB=$(ls -t dist/"$VARIANT"/cxr-review_*.deb 2>/dev/null | head -n 1 || true)
if [ "${REUSE_DEB:-0}" = 1 ] && [ -n "$DEB" ]; then
    log "reusing $DEB"
else
    packaging/build_deb.sh "$VARIANT"
    DEB=$(ls -t dist/"$VARIANT"/cxr-review_*.deb | head -n 1)
fi
DEB_S=$(since "$t")
DEB_B=$(stat -c %s "$DEB")
dpkg-deb --field "$DEB" Depends | grep -q libxcb || { echo "Depends lacks the xcb libraries" >&2; exit 1; }

# --- 3. tools for the GUI check --------------------------------------------------------------------
if ! command -v Xvfb >/dev/null || ! command -v import >/dev/null; then
    log "installing xvfb and imagemagick"
    apt-get install -y -q xvfb imagemagick >/dev/null
fi

# --- 4. install ----------------------------------------------------------------------------------
if dpkg -s cxr-review >/dev/null 2>&1; then apt-get remove -y -q cxr-review >/dev/null; fi
t=$(now)
apt-get install -y -q "./$DEB" >/dev/null
INSTALL_S=$(since "$t")
for f in /usr/bin/cxr-desktop /usr/bin/cxr-screen /opt/cxr-review/cxr-desktop /usr/share/applications/cxr-review.desktop \
         /usr/share/icons/hicolor/256x256/apps/cxr-review.png; do
    [ -e "$f" ] || { echo "test_installer: not installed: $f" >&2; exit 1; }
done
log "installed $DEB in ${INSTALL_S}s"
for tool in screen train model; do
    "cxr-$tool" --help >/dev/null || { echo "test_installer: cxr-$tool --help failed" >&2; exit 1; }
done

# A throw-away user home: proves the app writes only to the user's own directories.
TMPH=$(mktemp -d /tmp/cxr-installer-test.XXXXXX)
XVFB_PID=""; APP_PID=""
cleanup() {
    [ -n "$APP_PID" ] && kill "$APP_PID" 2>/dev/null || true
    [ -n "$XVFB_PID" ] && kill "$XVFB_PID" 2>/dev/null || true
    rm -rf "$TMPH"
}
trap cleanup EXIT
touch "$TMPH/marker"
export HOME="$TMPH/home"
unset CXR_CACHE_DIR CXR_DATA_DIR CXR_RESOURCES_DIR CXR_SETTINGS_FILE XDG_CONFIG_HOME XDG_DATA_HOME XDG_CACHE_HOME
mkdir -p "$HOME"

# --- 5. installed self-test -----------------------------------------------------------------------
t=$(now)
set +e
(cd "$TMPH" && QT_QPA_PLATFORM=offscreen cxr-desktop --self-test >"$TMPH/selftest.out" 2>"$TMPH/selftest.err")
ST_RC=$?
set -e
SELFTEST_S=$(since "$t")
LINES=$(grep -c . "$TMPH/selftest.out" || true)
ST_JSON=$(tail -n 1 "$TMPH/selftest.out")
log "installed self-test: exit $ST_RC, $LINES stdout line(s), ${SELFTEST_S}s"
echo "$ST_JSON"
if [ "$ST_RC" != 0 ] || [ "$LINES" != 1 ]; then
    tail -n 30 "$TMPH/selftest.err" >&2
    echo "test_installer: the installed self-test failed" >&2; exit 1
fi
"$PY" -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["passed"] is True, r' "$ST_JSON"
# The ONNX Runtime path exports the model graph once into the user's cache (not /opt).
if echo "$ST_JSON" | grep -q onnxruntime; then
    ls "$HOME"/.cache/cxr-review/onnx/*.onnx >/dev/null 2>&1 \
        || { echo "test_installer: no exported graph in ~/.cache/cxr-review/onnx" >&2; exit 1; }
fi
WROTE=$(find /opt/cxr-review -newer "$TMPH/marker" | head -n 5)
[ -z "$WROTE" ] || { echo "test_installer: the app wrote into /opt/cxr-review: $WROTE" >&2; exit 1; }

# --- 6. launch under Xvfb, screenshot -------------------------------------------------------------
DISP=""
for n in $(seq 90 140); do
    if [ ! -e "/tmp/.X$n-lock" ] && [ ! -e "/tmp/.X11-unix/X$n" ]; then DISP=":$n"; break; fi
done
[ -n "$DISP" ] || { echo "no free X display" >&2; exit 1; }
Xvfb "$DISP" -screen 0 1400x900x24 -nolisten tcp >/dev/null 2>&1 &
XVFB_PID=$!
for _ in $(seq 1 100); do [ -e "/tmp/.X11-unix/X${DISP#:}" ] && break; sleep 0.1; done
STUDY=/opt/cxr-review/_internal/resources/samples/00000001_000.png
t=$(now)
DISPLAY="$DISP" QT_QPA_PLATFORM=xcb CXR_REPORT_STARTUP=1 cxr-desktop "$STUDY" >"$TMPH/app.out" 2>"$TMPH/app.err" &
APP_PID=$!
# Wait for the milestones the app prints (window_shown, model_ready, image_shown, first_result).
deadline=$(( $(date +%s) + ${GUI_TIMEOUT:-300} ))
until grep -q '"first_result"' "$TMPH/app.out" 2>/dev/null; do
    if ! kill -0 "$APP_PID" 2>/dev/null; then
        tail -n 30 "$TMPH/app.err" >&2; echo "test_installer: the installed app exited early" >&2; exit 1
    fi
    if [ "$(date +%s)" -gt "$deadline" ]; then
        log "no result within ${GUI_TIMEOUT:-300}s; screenshot of what is shown"; break
    fi
    sleep 0.5
done
sleep 2  # let the overlay and panels repaint
mkdir -p "$(dirname "$SHOT")"
DISPLAY="$DISP" import -window root "$SHOT"
EVENTS=$("$PY" - "$TMPH/app.out" "$t" <<'EOF'
import json, sys
t0 = float(sys.argv[2]); ev = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if "event" in e:
            ev.setdefault(e["event"] + "_s", round(e["t"] - t0, 2))
            if e["event"] == "window_shown" and "torch_loaded" in e:
                ev["torch_loaded_at_window_shown"] = e["torch_loaded"]
print(json.dumps(ev))
EOF
)
log "screenshot: $SHOT; app milestones: $EVENTS"
if echo "$EVENTS" | grep -q '"torch_loaded_at_window_shown": true'; then
    echo "test_installer: torch was imported before the window appeared" >&2; exit 1
fi
kill "$APP_PID" 2>/dev/null || true; wait "$APP_PID" 2>/dev/null || true; APP_PID=""
kill "$XVFB_PID" 2>/dev/null || true; wait "$XVFB_PID" 2>/dev/null || true; XVFB_PID=""

USER_FILES=$(find "$HOME" -mindepth 1 | wc -l)
log "user files written under the throw-away HOME: $USER_FILES"

# --- 7. uninstall ------------------------------------------------------------------------------
REMOVED=not-run
if [ "${KEEP_INSTALLED:-0}" != 1 ]; then
    t=$(now)
    apt-get remove -y -q cxr-review >/dev/null
    REMOVE_S=$(since "$t")
    for f in /opt/cxr-review /usr/bin/cxr-desktop /usr/bin/cxr-screen /usr/share/applications/cxr-review.desktop \
             /usr/share/icons/hicolor/256x256/apps/cxr-review.png; do
        [ ! -e "$f" ] || { echo "test_installer: left after removal: $f" >&2; exit 1; }
    done
    USER_FILES_AFTER=$(find "$HOME" -mindepth 1 | wc -l)
    [ "$USER_FILES_AFTER" = "$USER_FILES" ] || { echo "test_installer: removal touched user data" >&2; exit 1; }
    # remove leaves dpkg's record of the maintainer scripts ("rc"); purge drops that too
    dpkg --purge cxr-review >/dev/null
    ! dpkg -s cxr-review >/dev/null 2>&1 || { echo "test_installer: cxr-review still known to dpkg after purge" >&2; exit 1; }
    REMOVED="clean in ${REMOVE_S}s"
    log "removed: /opt/cxr-review and the launcher are gone; user data kept"
fi

TOTAL_S=$(( $(date +%s) - T_START ))
echo "{\"variant\": \"$VARIANT\", \"bundle_bytes\": $BUNDLE_B, \"bundle_step_s\": $BUNDLE_S, \"deb\": \"$DEB\", \"deb_bytes\": $DEB_B, \"deb_step_s\": $DEB_S, \"install_s\": $INSTALL_S, \"selftest_s\": $SELFTEST_S, \"gui\": $EVENTS, \"screenshot\": \"$SHOT\", \"removed\": \"$REMOVED\", \"total_s\": $TOTAL_S}"
