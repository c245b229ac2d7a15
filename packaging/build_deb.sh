#!/usr/bin/env bash
# Package a built bundle as a Debian package: packaging/build_deb.sh [cpu|cuda]
#
# Needs dist/<variant>/cxr-review from packaging/build_bundle.sh. Writes
# dist/<variant>/cxr-review_<version>_<arch>.deb which installs:
#   /opt/cxr-review/                          the bundle
#   /usr/bin/cxr-desktop                      launcher (tiny shell script)
#   /usr/bin/cxr-screen, cxr-train, cxr-model the command-line tools, through the same executable
#   /usr/share/applications/cxr-review.desktop
#   /usr/share/icons/hicolor/<size>/apps/cxr-review.png (+ scalable .svg)
# Depends: the host packages found by ldd over the bundle (packaging/deb_depends.py).
#   DEB_COMPRESS=zstd|xz (default zstd: xz takes many minutes on a 3+ GB bundle), DEB_LEVEL=<n>
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT="${1:-${CXR_BUNDLE_VARIANT:-cpu}}"
PY="${PYTHON:-.venv/bin/python}"
BUNDLE="dist/$VARIANT/cxr-review"
COMPRESS="${DEB_COMPRESS:-zstd}"
case "$COMPRESS" in zstd) LEVEL="${DEB_LEVEL:-3}";; xz) LEVEL="${DEB_LEVEL:-6}";; *) echo "DEB_COMPRESS must be zstd or xz" >&2; exit 2;; esac
[ -x "$BUNDLE/cxr-desktop" ] || { echo "build_deb: no bundle at $BUNDLE; run packaging/build_bundle.sh $VARIANT first" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "build_deb: dpkg-deb not found (Debian/Ubuntu only)" >&2; exit 1; }

t0=$(date +%s)
VERSION=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$BUNDLE/_internal/resources/bundle.json")
ARCH=$(dpkg --print-architecture)
STAGE="build/deb-$VARIANT/root"
OUT="dist/$VARIANT/cxr-review_${VERSION}_${ARCH}.deb"
rm -rf "build/deb-$VARIANT"
mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" "$STAGE/usr/share/doc/cxr-review"

echo "build_deb: finding host dependencies with ldd over $BUNDLE"
DEPENDS=$("$PY" packaging/deb_depends.py "$BUNDLE" --report "build/deb-$VARIANT/depends.json")
echo "build_deb: Depends: $DEPENDS"

# Hard links: no second copy of a multi-GB bundle (falls back to a copy across file systems).
cp -al "$BUNDLE" "$STAGE/opt/cxr-review" 2>/dev/null || cp -a "$BUNDLE" "$STAGE/opt/cxr-review"
chmod -R u+rwX,go+rX,go-w "$STAGE/opt/cxr-review"
install -m 0755 packaging/deb/cxr-desktop "$STAGE/usr/bin/cxr-desktop"
for tool in screen train model; do  # the command-line tools run through the same executable
    printf '#!/bin/sh\n# Launcher installed as /usr/bin/cxr-%s (see packaging/entry.py).\nexport CXR_ENTRY=%s\nexec /opt/cxr-review/cxr-desktop "$@"\n' \
        "$tool" "$tool" >"$STAGE/usr/bin/cxr-$tool"
    chmod 0755 "$STAGE/usr/bin/cxr-$tool"
done
install -m 0644 packaging/cxr-review.desktop "$STAGE/usr/share/applications/cxr-review.desktop"
for s in 16 32 48 64 128 256 512; do
    install -D -m 0644 "resources/icons/cxr-review-$s.png" "$STAGE/usr/share/icons/hicolor/${s}x${s}/apps/cxr-review.png"
done
install -D -m 0644 resources/icons/cxr-review.svg "$STAGE/usr/share/icons/hicolor/scalable/apps/cxr-review.svg"
cat >"$STAGE/usr/share/doc/cxr-review/README.Debian" <<EOF
CXR Review $VERSION ($VARIANT build) - a decision aid, not a diagnosis.
The application lives in /opt/cxr-review; run 'cxr-desktop --self-test' to check it.
User settings, models and results are kept per user (~/.local/share/cxr-review,
~/.cache/cxr-review, ~/.config/CXR Review) and are not removed with the package.
EOF
install -m 0755 packaging/deb/postinst packaging/deb/postrm "$STAGE/DEBIAN/"

INSTALLED_KB=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@INSTALLED_SIZE@|$INSTALLED_KB|" \
    -e "s|@DEPENDS@|$DEPENDS|" -e "s|@VARIANT@|$VARIANT|" packaging/deb/control.in >"$STAGE/DEBIAN/control"
if grep -q '@[A-Z_]*@' "$STAGE/DEBIAN/control"; then
    echo "build_deb: unfilled placeholder in DEBIAN/control" >&2; exit 1
fi

echo "build_deb: dpkg-deb --build -Z$COMPRESS -z$LEVEL ($((INSTALLED_KB / 1024)) MiB to pack)"
dpkg-deb --root-owner-group --build "-Z$COMPRESS" "-z$LEVEL" "$STAGE" "$OUT" >/dev/null
rm -rf "$STAGE"  # the hard-linked tree; the bundle itself stays in dist/
DEB_S=$(( $(date +%s) - t0 ))
echo "build_deb: $OUT: $(du -h "$OUT" | cut -f1) ($(stat -c %s "$OUT") bytes), installed size $((INSTALLED_KB / 1024)) MiB, in ${DEB_S}s"
