"""Generate the demonstration data set: real radiographs with and without synthetic focal opacities.

    python training/make_demo_dataset.py --out build/demo-data [--source ../shared/data/cxr]

Deterministic (seeded): the same sources and settings give byte-identical PNGs.
Writes ``normal/`` and ``opacity/`` with files ``src<NNN>_v<K>.png``; every source
radiograph contributes variants to both classes, so the patient pattern
``^(src\\d+)_`` splits by source image. See :mod:`cxr_desktop.training.synthetic`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_desktop.training.synthetic import PATIENT_REGEX, find_sources, write_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "cxr",
                    help="folder of real radiographs (searched recursively)")
    ap.add_argument("--out", type=Path, required=True, help="output folder (must be empty or absent)")
    ap.add_argument("--variants", type=int, default=12, help="variants per source image (half get an opacity)")
    ap.add_argument("--size", type=int, default=256, help="side of the square PNGs written")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--contrast", type=float, nargs=2, default=(0.35, 0.6), metavar=("MIN", "MAX"),
                    help="opacity strength range (0.6: lung about as bright as soft tissue, like consolidation)")
    ap.add_argument("--radius", type=float, nargs=2, default=(0.07, 0.13), metavar=("MIN", "MAX"),
                    help="opacity radius range, as a fraction of the image side")
    ap.add_argument("--jitter", type=float, default=1.0, help="exposure/noise variation of the variants")
    ap.add_argument("--masks", type=Path, help="also write each opacity's mask here (outside --out), "
                    "for training/check_demo_cam.py")
    args = ap.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"{args.out} is not empty; choose a new folder", file=sys.stderr)
        return 2
    sources = find_sources(args.source)
    if len(sources) < 6:
        print(f"only {len(sources)} readable radiographs in {args.source}; need at least 6", file=sys.stderr)
        return 2
    counts = write_dataset(sources, args.out, variants=args.variants, size=args.size, seed=args.seed,
                           contrast=tuple(args.contrast), radius=tuple(args.radius), jitter=args.jitter,
                           masks_dir=args.masks)
    manifest = {"sources": [s.name for s in sources], "variants": args.variants, "size": args.size,
                "seed": args.seed, "contrast": list(args.contrast), "radius": list(args.radius),
                "jitter": args.jitter, "counts": counts, "patient_regex": PATIENT_REGEX}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(sources)} source radiographs -> {counts} in {args.out}")
    print(f"train with: cxr-train {args.out} --patient-regex '{PATIENT_REGEX}' ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
