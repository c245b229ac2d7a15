"""Find the host packages a bundle needs: ldd over its ELF files, then ``dpkg -S``.

PyInstaller bundles almost every library, but deliberately not glibc, the OpenGL/EGL stack
and (by build.spec) the X11/xcb/xkb/fontconfig/D-Bus desktop stack, which must match the
user's system. Whatever ``ldd`` resolves outside the bundle is therefore a host dependency;
``dpkg -S`` names its package. Libraries ``ldd`` cannot find are reported with the files that
need them: fatal for the essentials (the executable, Qt core/GUI/widgets, the xcb and
offscreen platform plugins, torch), a warning for optional plugins (wayland, eglfs, sql
drivers, multi-GPU transports) that are only loaded on demand.

    python packaging/deb_depends.py dist/cpu/cxr-review [--report build/deb-depends.json]

prints the ``Depends:`` value (one line) on stdout.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import re
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# Files whose unresolved dependencies make the bundle unusable (relative POSIX paths, globs).
ESSENTIAL = [
    "cxr-desktop",
    "_internal/libpython3*",
    "_internal/PySide6/Qt/lib/libQt6Core.so*",
    "_internal/PySide6/Qt/lib/libQt6Gui.so*",
    "_internal/PySide6/Qt/lib/libQt6Widgets.so*",
    "_internal/PySide6/Qt/lib/libQt6XcbQpa.so*",
    "_internal/PySide6/Qt/plugins/platforms/libqxcb.so",
    "_internal/PySide6/Qt/plugins/platforms/libqoffscreen.so",
    "_internal/torch/lib/libtorch*.so",
    "_internal/torch/_C*.so",
    "_internal/torchvision/*.so",
    "_internal/onnxruntime/capi/*.so",
    "_internal/*.cpython-*.so",
]
_LDD_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
_LDD_MISSING = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$")
_LDD_DIRECT = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)\s*$")  # the dynamic loader itself


@dataclass
class LddResult:
    """What ``ldd`` said about one file: resolved paths by soname, and missing sonames."""

    resolved: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def parse_ldd(text: str) -> LddResult:
    """Parse ``ldd`` output (``soname => /path (0x...)`` / ``soname => not found``)."""
    out = LddResult()
    for line in text.splitlines():
        m = _LDD_FOUND.match(line)
        if m:
            out.resolved[m.group(1)] = m.group(2)
            continue
        m = _LDD_MISSING.match(line)
        if m:
            out.missing.append(m.group(1))
            continue
        m = _LDD_DIRECT.match(line)
        if m:
            out.resolved[os.path.basename(m.group(1))] = m.group(1)
    return out


def parse_dpkg_search(text: str) -> dict[str, str]:
    """``dpkg -S`` lines (``pkg[:arch][, pkg2]: /path``) -> {path: first package without arch}."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if ": " not in line or line.startswith("dpkg-query:") or line.startswith("diversion "):
            continue
        pkgs, path = line.split(": ", 1)
        pkg = pkgs.split(",")[0].strip().split(":")[0]
        found.setdefault(path.strip(), pkg)
    return found


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def elf_files(bundle: Path) -> list[Path]:
    """Every regular ELF file in the bundle (symlinks point at files that are listed anyway)."""
    return sorted(p for p in bundle.rglob("*") if p.is_file() and not p.is_symlink() and is_elf(p))


def library_dirs(bundle: Path, elfs: list[Path]) -> list[str]:
    """What the frozen app's loader searches: _internal (the bootloader's LD_LIBRARY_PATH) and
    every bundle folder holding shared libraries (RPATH/$ORIGIN lookups inside packages)."""
    dirs = {str(bundle / "_internal")}
    dirs.update(str(p.parent) for p in elfs if ".so" in p.name)
    return sorted(dirs)


def run_ldd(path: Path, env: dict[str, str]) -> LddResult:
    proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True, env=env)
    return parse_ldd(proc.stdout)  # "not a dynamic executable" (static / data ELF): empty result


def owning_packages(paths: list[str]) -> tuple[dict[str, str], list[str]]:
    """Map host library paths to Debian packages (one ``dpkg -S`` call for all of them).

    Each path is also tried resolved and as its /usr-merged twin (``/lib/...`` vs
    ``/usr/lib/...``), since dpkg knows a file only by the path its package ships.
    """
    candidates: dict[str, list[str]] = {}
    for path in sorted(set(paths)):
        cands = [path, os.path.realpath(path)]
        for c in list(cands):
            if c.startswith("/usr/lib"):
                cands.append(c[len("/usr"):])
            elif c.startswith("/lib"):
                cands.append("/usr" + c)
        candidates[path] = list(dict.fromkeys(cands))
    every = sorted({c for cands in candidates.values() for c in cands})
    hits: dict[str, str] = {}
    for i in range(0, len(every), 200):  # keep the command line short
        proc = subprocess.run(["dpkg", "-S", *every[i:i + 200]], capture_output=True, text=True)
        hits.update(parse_dpkg_search(proc.stdout))  # exit 1 when some path has no owner: expected
    result: dict[str, str] = {}
    unowned: list[str] = []
    for path, cands in candidates.items():
        pkg = next((hits[c] for c in cands if c in hits), None)
        if pkg:
            result[path] = pkg
        else:
            unowned.append(path)
    return result, unowned


def is_essential(rel: str) -> bool:
    return any(fnmatch.fnmatchcase(rel, pat) for pat in ESSENTIAL)


def format_depends(packages: set[str], glibc: str | None) -> str:
    """Sorted ``Depends`` value; libc6 gets the build host's glibc as its minimum version."""
    items = []
    for pkg in sorted(packages):
        if pkg == "libc6" and glibc:
            items.append(f"libc6 (>= {glibc})")
        else:
            items.append(pkg)
    return ", ".join(items)


def analyse(bundle: Path, jobs: int = 2) -> dict:
    """Run the whole analysis; returns a report (see ``main`` for its use)."""
    bundle = bundle.resolve()
    elfs = elf_files(bundle)
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(library_dirs(bundle, elfs)), LC_ALL="C")
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = dict(zip(elfs, pool.map(lambda p: run_ldd(p, env), elfs)))
    host_paths: dict[str, set[str]] = defaultdict(set)  # host lib path -> bundle files needing it
    missing: dict[str, set[str]] = defaultdict(set)
    for f, r in results.items():
        rel = f.relative_to(bundle).as_posix()
        for soname, path in r.resolved.items():
            if not os.path.realpath(path).startswith(str(bundle) + os.sep) and not path.startswith(str(bundle) + os.sep):
                host_paths[path].add(rel)
        for soname in r.missing:
            missing[soname].add(rel)
    owners, unowned = owning_packages(list(host_paths))
    packages = set(owners.values())
    glibc = platform.libc_ver()[1] or None
    fatal = {so: sorted(f for f in files if is_essential(f)) for so, files in missing.items()}
    fatal = {so: files for so, files in fatal.items() if files}
    return {
        "bundle": bundle.name,
        "elf_files": len(elfs),
        "depends": format_depends(packages, glibc),
        "packages": {pkg: sorted({Path(p).name for p, o in owners.items() if o == pkg}) for pkg in sorted(packages)},
        "host_libraries_without_package": sorted(unowned),
        "missing_fatal": fatal,
        "missing_optional": {so: sorted(files)[:5] + ([f"... {len(files) - 5} more"] if len(files) > 5 else [])
                             for so, files in sorted(missing.items()) if so not in fatal},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path, help="the one-folder bundle (dist/<variant>/cxr-review)")
    ap.add_argument("--report", type=Path, help="write the full JSON report here")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    if not (args.bundle / "_internal").is_dir():
        print(f"deb_depends: {args.bundle} is not a PyInstaller one-folder bundle", file=sys.stderr)
        return 2
    report = analyse(args.bundle, args.jobs)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    if report["missing_fatal"]:
        print("deb_depends: libraries not found on this build host, needed by essential bundle files:",
              file=sys.stderr)
        for so, files in report["missing_fatal"].items():
            print(f"  {so}: {', '.join(files[:3])}", file=sys.stderr)
        print("Install them on the build host (e.g. apt-get install libxcb-cursor0 libxcb-icccm4 ...) and rerun.",
              file=sys.stderr)
        return 1
    if report["host_libraries_without_package"]:
        print(f"deb_depends: warning: host libraries owned by no package: {report['host_libraries_without_package']}",
              file=sys.stderr)
    print(report["depends"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
