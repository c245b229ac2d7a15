"""``cxr-desktop [PATH ...]``: the review window; ``--self-test`` checks an installation headless."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cxr-desktop", description="CXR Review - chest X-ray review with a decision aid.")
    ap.add_argument("paths", nargs="*", help="image files or folders to open")
    ap.add_argument("--self-test", action="store_true",
                    help="decode the sample studies, run predict + Grad-CAM, print one JSON line; no window")
    ap.add_argument("--model", help="model file to use instead of the remembered/default one")
    ap.add_argument("--samples", action="store_true",
                    help="open the sample studies that come with the app (resources/samples)")
    args = ap.parse_args(argv)
    if args.self_test:
        from cxr_desktop.selftest import main as self_test

        return self_test(model=args.model)  # --model: test that file, never the bundled one instead
    from cxr_desktop.gui.app import run

    # --samples: the window opens resources/samples, or says that none were found and how to open files
    return run(list(args.paths), model=args.model, samples=args.samples)


if __name__ == "__main__":
    sys.exit(main())
