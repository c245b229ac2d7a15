"""Scope figures of issue 12.1 for one model file: refusals, cautions, and whether cautions hide positives.

    python bench/bench_caution.py [--model resources/models/demo-cxr.safetensors] [--data ../shared/data]
                                  [--demo-data build/scope/data] [--limit X]

Prints, through the app's own path (decode -> scope rules -> preprocess -> engine -> learned check):
(1) every real radiograph in DATA/cxr (figure1/ included): refused by a rule (goal 0 % for the adult
    frontal CXRs), cautioned by the learned check (goal <= 5 %), the distance of each cautioned one.
    cxr/fake_monochrome1.dcm (a positive image under a MONOCHROME1 tag, displayed as a negative) is
    listed on its own, outside the rates.
(2) the held-out TEST split of the synthetic demonstration set (training/make_demo_dataset.py with
    the settings of training/build_demo_model.sh, split by source image as the model's training split
    it; built in --demo-data when absent): caution rate on positives (opacity) vs negatives, with a
    two-sided Fisher exact test (goal: no difference beyond chance). Variants of one source are not
    independent, so the per-source counts are printed too.
(3) the non-chest DICOMs of DATA/dicom (everything but RG1_J2KI.dcm, a chest CR): refused by a rule
    (goal >= 95 %), undecodable (no score either), and any that would be scored.
``--limit`` evaluates another caution limit (e.g. a recalibration's) without writing a model file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "training"))

from cxr_desktop.errors import CxrError  # noqa: E402
from cxr_desktop.imaging import load_image  # noqa: E402
from cxr_desktop.inference.engine import EngineOptions, load_engine  # noqa: E402
from cxr_desktop.paths import default_model_path  # noqa: E402
from cxr_desktop.preprocess import preprocess_for_card  # noqa: E402
from cxr_desktop.scope import ScopeSettings, check_image, from_loaded  # noqa: E402

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
CHEST_DICOMS = {"RG1_J2KI.dcm"}
MISLABELLED = {"fake_monochrome1.dcm"}
DEMO_DATA_ARGS = ["--variants", "16", "--size", "256", "--seed", "0", "--contrast", "0.35", "0.6",
                  "--radius", "0.07", "0.13"]  # as training/build_demo_model.sh


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher exact p for the table [[a, b], [c, d]] (scipy when present, else exact sum)."""
    try:
        from scipy.stats import fisher_exact as fe

        return float(fe([[a, b], [c, d]])[1])
    except ImportError:
        from math import comb

        r1, c1, n = a + b, a + c, a + b + c + d
        p = lambda k: comb(c1, k) * comb(n - c1, r1 - k) / comb(n, r1)  # noqa: E731
        p0 = p(a)
        return float(min(1.0, sum(p(k) for k in range(max(0, r1 + c1 - n), min(r1, c1) + 1) if p(k) <= p0 * (1 + 1e-9))))


def score(engine, learned, limit: float, paths: list[Path], settings: ScopeSettings) -> list[dict]:
    """Per file: decoded?, rule codes, distance (if the rules let it reach the model), cautioned?"""
    rows = []
    for p in paths:
        try:
            image = load_image(p)
        except CxrError as exc:
            rows.append({"path": p, "error": getattr(getattr(exc, "reason", None), "value", "error"), "codes": []})
            continue
        codes = check_image(image, settings).codes
        row = {"path": p, "error": None, "codes": codes, "distance": None, "caution": False}
        if not codes:  # refused images never reach the model (unless shown anyway)
            out = engine.run_batch(preprocess_for_card(image, engine.card.preprocessing)[None])
            d = float(learned.distance(out.pooled[0]))
            row.update(distance=d, caution=d > limit, score=float(out.probabilities[0, engine.card.positive_index]))
        rows.append(row)
    return rows


def real_radiographs(engine, learned, limit, data: Path) -> None:
    paths = [p for p in sorted((data / "cxr").rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    rows = score(engine, learned, limit, [p for p in paths if p.name not in MISLABELLED], ScopeSettings())
    n = len(rows)
    refused = [r for r in rows if r["codes"] or r["error"]]
    cautioned = [r for r in rows if r.get("caution")]
    print(f"\n(1) real radiographs in {data.name}/cxr (figure1/ included): {n} files")
    print(f"  refused or not decoded: {len(refused)}/{n} = {len(refused) / n:.1%}  (goal 0 %)")
    for r in refused:
        print(f"    {r['path'].name}: {r['error'] or ';'.join(r['codes'])}")
    print(f"  cautioned (scored, marked): {len(cautioned)}/{n} = {len(cautioned) / n:.1%}  (goal <= 5 %)")
    for r in cautioned:
        print(f"    {r['path'].relative_to(data / 'cxr')}: distance {r['distance']:.2f} > limit {limit:.2f}")
    d = np.array([r["distance"] for r in rows if r.get("distance") is not None])
    print(f"  distances: median {np.median(d):.2f}, 95th percentile {np.percentile(d, 95):.2f}, max {d.max():.2f}")
    for r in score(engine, learned, limit, [p for p in paths if p.name in MISLABELLED], ScopeSettings()):
        print(f"  {r['path'].name} (mislabelled MONOCHROME1, outside the rates): "
              f"{'refused: ' + ';'.join(r['codes']) if r['codes'] else 'scored, caution ' + str(r['caution'])}")


def held_out_split(engine, learned, limit, demo: Path, split_name: str) -> None:
    from recalibrate_scope import reproduce_split  # training/recalibrate_scope.py

    if not demo.is_dir():
        print(f"\n(building the demonstration data set in {demo})")
        subprocess.run([sys.executable, str(REPO / "training" / "make_demo_dataset.py"), "--out", str(demo),
                        *DEMO_DATA_ARGS], check=True, stdout=subprocess.DEVNULL)
    try:
        items, candidates = reproduce_split(engine.card, demo)
    except ValueError as exc:
        print(f"\n(2) held-out split: {exc}")
        return
    # the first candidate whose validation split gives the card's AUC is the model's own split
    from recalibrate_scope import auc, pooled_features

    card_auc = ((engine.card.metrics or {}).get("validation") or {}).get("auc")
    for groups, split, how in candidates:
        val = split.indices("val")
        _, probs = pooled_features(engine, [items[i].path for i in val])
        y = np.array([items[i].cls == engine.card.positive_class for i in val])
        if card_auc is None or abs(auc(y, probs[:, engine.card.positive_index]) - float(card_auc)) <= 0.002:
            break
    else:
        print("\n(2) held-out split: no candidate split reproduces the card's validation AUC")
        return
    idx = split.indices(split_name)
    rows = score(engine, learned, limit, [Path(items[i].path) for i in idx],
                 ScopeSettings())  # the synthetic PNGs pass every rule
    pos = [r for r, i in zip(rows, idx) if items[i].cls == engine.card.positive_class]
    neg = [r for r, i in zip(rows, idx) if items[i].cls != engine.card.positive_class]
    a, b = sum(r["caution"] for r in pos), sum(not r["caution"] for r in pos)
    c, d = sum(r["caution"] for r in neg), sum(not r["caution"] for r in neg)
    refused = sum(bool(r["codes"] or r["error"]) for r in rows)
    print(f"\n(2) held-out {split_name} split of the synthetic set ({demo}), split by {how}: {len(rows)} images "
          f"of {len({groups[i] for i in idx})} source radiographs never used in training; refused {refused}")
    print(f"  cautioned positives ({engine.card.positive_class}): {a}/{a + b} = {a / max(1, a + b):.1%}")
    print(f"  cautioned negatives: {c}/{c + d} = {c / max(1, c + d):.1%}")
    print(f"  Fisher exact test (two-sided), cautioned x class: p = {fisher_exact(a, b, c, d):.3f}")
    per = defaultdict(lambda: [0, 0, 0, 0])
    for r, i in zip(rows, idx):
        k = 0 if items[i].cls == engine.card.positive_class else 2
        per[groups[i]][k] += r["caution"]
        per[groups[i]][k + 1] += 1
    print("  per source radiograph (cautioned pos/n, neg/n): "
          + ", ".join(f"{g[:8]} {v[0]}/{v[1]} {v[2]}/{v[3]}" for g, v in sorted(per.items())))
    sc = np.array([r["distance"] for r in rows])
    print(f"  distances: median {np.median(sc):.2f}, max {sc.max():.2f} (limit {limit:.2f})")


def non_chest(engine, learned, limit, data: Path) -> None:
    paths = [p for p in sorted((data / "dicom").glob("*.dcm")) if p.name not in CHEST_DICOMS]
    rows = score(engine, learned, limit, paths, ScopeSettings())
    n = len(rows)
    refused = [r for r in rows if r["codes"]]
    errors = [r for r in rows if r["error"]]
    scored = [r for r in rows if not r["codes"] and not r["error"]]
    print(f"\n(3) non-chest DICOMs in {data.name}/dicom (all but {', '.join(sorted(CHEST_DICOMS))}): {n} files")
    print(f"  refused by a rule: {len(refused)}/{n} = {len(refused) / n:.1%}; not decodable (error row, no score): "
          f"{len(errors)}; not scored in all: {len(refused) + len(errors)}/{n} = {(len(refused) + len(errors)) / n:.1%}"
          "  (goal >= 95 %)")
    decodable = n - len(errors)
    print(f"  refused among the decodable ones: {len(refused)}/{decodable} = {len(refused) / max(1, decodable):.1%}")
    for r in errors:
        print(f"    not decodable: {r['path'].name} ({r['error']})")
    for r in scored:
        print(f"    SCORED: {r['path'].name}, caution {r['caution']} (distance {r['distance']:.2f})")
    chest = score(engine, learned, limit, [data / "dicom" / n for n in sorted(CHEST_DICOMS)], ScopeSettings())
    for r in chest:
        print(f"  chest CR {r['path'].name}: {'refused: ' + ';'.join(r['codes']) if r['codes'] else 'scored'}"
              + (f", caution {r['caution']} (distance {r['distance']:.2f})" if r.get("distance") is not None else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--demo-data", type=Path, default=REPO / "build" / "scope" / "data")
    ap.add_argument("--split", default="test", choices=("val", "test"), help="held-out split for (2)")
    ap.add_argument("--limit", type=float, help="evaluate this caution limit instead of the card's")
    ap.add_argument("--skip", nargs="*", default=[], choices=("real", "split", "dicom"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    engine = load_engine(args.model, options=EngineOptions(device="cpu", backend="torch"))
    learned = from_loaded(engine)
    if not learned.enabled:
        print(learned.status)
        return 2
    limit = float(args.limit if args.limit is not None else learned.threshold)
    ood = engine.card.extra.get("ood") or {}
    print(f"model: {engine.card.display_name} ({args.model.name}, sha256 {engine.model_sha256[:12]}); caution limit "
          f"{limit:.4f} ({'--limit' if args.limit is not None else 'card'}; card: {ood.get('threshold')}, from "
          f"{ood.get('threshold_split')}, {(ood.get('calibration') or {}).get('rule', 'no calibration record')})")
    if "real" not in args.skip:
        real_radiographs(engine, learned, limit, args.data)
    if "split" not in args.skip:
        held_out_split(engine, learned, limit, args.demo_data, args.split)
    if "dicom" not in args.skip:
        non_chest(engine, learned, limit, args.data)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
