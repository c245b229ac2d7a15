"""Screenshot of the real app under Xvfb: a sample study with the Grad-CAM overlay at 50 % opacity.

The default study is the repository's own sample (resources/samples), so it runs on a fresh
clone. With the demonstration model, ``--study resources/samples/RG1_J2KI.dcm`` scores above
the decision threshold (the heatmap is drawn) and the default NIH sample below it (the canvas
says "No finding above threshold - no heatmap").

Starts an X server (Xvfb), launches ``cxr-desktop`` on the study exactly as a
user would (real xcb platform, not offscreen), waits until the result is shown
(the app's ``CXR_REPORT_STARTUP`` milestones), then takes an X screenshot of
the whole screen with ImageMagick's ``import -window root`` (``xwd`` as a
fallback) and saves it as PNG.

Needs: ``apt-get install -y xvfb x11-apps imagemagick libxcb-icccm4 libxcb-keysyms1
libxcb-cursor0`` (the last three are what Qt's xcb plugin needs beyond Xvfb).

Usage: python bench/screenshot_viewer.py OUT.png [--study PATH | --samples] [--model FILE]
       [--opacity 50] [--size 1400x900]
Settings are written to a temporary INI file, so the user's own are untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STUDY = REPO / "resources" / "samples" / "00000001_000.png"  # in the repository: works on a fresh clone


def free_display() -> int:
    for n in range(90, 140):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number between :90 and :139")


def wait_for_display(n: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if Path(f"/tmp/.X11-unix/X{n}").exists():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"Xvfb exited with code {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError("Xvfb did not start")


def grab(display: str, out: Path) -> str:
    env = dict(os.environ, DISPLAY=display)
    if shutil.which("import"):
        subprocess.run(["import", "-window", "root", str(out)], env=env, check=True, timeout=60)
        return "import -window root"
    if shutil.which("xwd") and shutil.which("convert"):
        xwd = out.with_suffix(".xwd")
        subprocess.run(["xwd", "-root", "-silent", "-out", str(xwd)], env=env, check=True, timeout=60)
        subprocess.run(["convert", str(xwd), str(out)], check=True, timeout=60)
        xwd.unlink()
        return "xwd -root"
    raise RuntimeError("neither ImageMagick 'import' nor 'xwd'+'convert' is installed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="PNG file to write")
    ap.add_argument("--study", type=Path, default=DEFAULT_STUDY)
    ap.add_argument("--samples", action="store_true",
                    help="launch as README's first command does (cxr-desktop --samples) instead of --study")
    ap.add_argument("--model", help="model file (default: what the app would use)")
    ap.add_argument("--opacity", type=int, default=50)
    ap.add_argument("--colormap", default="Turbo")
    ap.add_argument("--size", default="1400x900", help="screen size WxH")
    ap.add_argument("--timeout", type=float, default=240.0)
    args = ap.parse_args(argv)
    if not shutil.which("Xvfb"):
        print("Xvfb is not installed (apt-get install -y xvfb x11-apps imagemagick)", file=sys.stderr)
        return 2
    if not args.samples and not args.study.exists():
        print(f"study not found: {args.study}", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="cxr-shot-"))
    ini = tmp / "settings.ini"
    ini.write_text(f"[overlay]\nopacity={args.opacity}\ncolormap={args.colormap}\nvisible=true\n")
    n = free_display()
    display = f":{n}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", f"{args.size}x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = None
    try:
        wait_for_display(n, xvfb)
        env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb", CXR_REPORT_STARTUP="1",
                   CXR_SETTINGS_FILE=str(ini), CXR_CACHE_DIR=os.environ.get("CXR_CACHE_DIR", str(tmp / "cache")),
                   CXR_DATA_DIR=str(tmp / "data"), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "cxr_desktop.cli.desktop"] + (["--samples"] if args.samples else [str(args.study)])
        if args.model:
            cmd += ["--model", args.model]
        t0 = time.time()
        app = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        events: dict[str, float] = {}
        assert app.stdout is not None
        while "first_result" not in events:
            if time.time() - t0 > args.timeout:
                raise RuntimeError(f"no result within {args.timeout:.0f} s (events so far: {sorted(events)})")
            line = app.stdout.readline()
            if not line:
                err = app.stderr.read() if app.stderr else ""
                raise RuntimeError(f"the app exited early (code {app.poll()}): {err[-1500:]}")
            if line.startswith("{"):
                ev = json.loads(line)
                events[ev["event"]] = ev["t"]
        time.sleep(1.5)  # let the overlay and panels repaint
        args.out.parent.mkdir(parents=True, exist_ok=True)
        how = grab(display, args.out)
        print(json.dumps({"screenshot": str(args.out), "grabbed_with": how, "display": display,
                          **{f"{k}_s": round(v - t0, 2) for k, v in sorted(events.items(), key=lambda kv: kv[1])}}))
        return 0
    finally:
        if app is not None and app.poll() is None:
            app.terminate()
            try:
                app.wait(10)
            except subprocess.TimeoutExpired:
                app.kill()
        xvfb.terminate()
        try:
            xvfb.wait(10)
        except subprocess.TimeoutExpired:
            xvfb.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
