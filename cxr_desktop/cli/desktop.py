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
    ap.add_argument("--samples", action="store_true", help="open the bundled sample studies")
    args = ap.parse_args(argv)
    if args.self_test:
        from cxr_desktop.selftest import main as self_test

        return self_test()
    from cxr_desktop.gui.app import run

    paths = list(args.paths)
    if args.samples:
        from cxr_desktop.paths import sample_studies_dir

        paths.append(str(sample_studies_dir()))
    return run(paths, model=args.model)


if __name__ == "__main__":
    sys.exit(main())
