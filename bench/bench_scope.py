"""Input-safety evaluation on the shared data, in one run.

Groups: chest radiographs (../shared/data/cxr incl. figure1/, plus dicom/RG1_J2KI.dcm, a CR PA chest)
versus the non-chest DICOMs of ../shared/data/dicom (CT, MR, US, NM, SEG, secondary captures,
parametric maps). ``cxr/fake_monochrome1.dcm`` (a positive image under a MONOCHROME1 tag, so it
displays as a negative) is reported on its own line, in neither group.

Prints, for a model file:
(a) how many images each scope rule flags in each group;
(b) the learned check (Mahalanobis distance of pooled features, caution limit from the model card):
    AUROC chest vs non-chest, against the named baseline "max-softmax probability" (1 - max p,
    Hendrycks & Gimpel 2017), and the caution rates at the card's limit (a caution never refuses:
    the image is scored and marked; the issue-12 figures are in bench/bench_caution.py).

(c) with --refit: the same features, statistics refitted by the training code on half of the shared
    chest radiographs, AUROC on the held-out half (the method on this data, apart from the model's
    own training set).

Usage: python bench/bench_scope.py [--model resources/models/demo-cxr.safetensors] [--data ../shared/data]
       python bench/bench_scope.py --synthetic   # no trained model yet: random-init model with
                                                 # synthetic statistics (exercises the script only)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_desktop.errors import CxrError  # noqa: E402
from cxr_desktop.imaging import load_image  # noqa: E402
from cxr_desktop.inference.engine import EngineOptions, load_engine  # noqa: E402
from cxr_desktop.paths import default_model_path  # noqa: E402
from cxr_desktop.preprocess import preprocess_for_card  # noqa: E402
from cxr_desktop.scope import RULE_CODES, ScopeSettings, check_image, from_loaded  # noqa: E402
from cxr_desktop.scope.learned import METHOD  # noqa: E402

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
CHEST_DICOMS = {"RG1_J2KI.dcm"}
MISLABELLED = {"fake_monochrome1.dcm"}


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney U / n1 n2)."""
    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    if not len(neg) or not len(pos):
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).mean()
    eq = (pos[:, None] == neg[None, :]).mean()
    return float(gt + 0.5 * eq)


def synthetic_model(folder: Path, input_size: int) -> Path:
    """A random-init model with synthetic (meaningless) feature statistics, for trying the script."""
    import torch

    from cxr_desktop.model.modelfile import save_model
    from cxr_desktop.model.weights import init_model

    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="imagenet",
                             input_size=input_size, name="synthetic-scope-bench", seed=0)
    rng = np.random.default_rng(0)
    k = 16
    comps, _ = np.linalg.qr(rng.standard_normal((2048, k)))
    tensors = {
        "ood.pca_mean": np.full(2048, 0.5, np.float32),
        "ood.pca_components": comps.T.astype(np.float32),
        "ood.class_means": (0.1 * rng.standard_normal((2, k))).astype(np.float32),
        "ood.precision": np.eye(k, dtype=np.float32),
    }
    card.extra["ood"] = {"method": METHOD, "threshold": 1.0, "k": k, "synthetic": True}
    card.warnings.append("Synthetic feature statistics for bench/bench_scope.py; not a real model.")
    path = folder / "synthetic-scope.safetensors"
    save_model(path, model, card, extra_tensors={n: torch.from_numpy(t) for n, t in tensors.items()})
    return path


def collect(data: Path) -> tuple[list[Path], list[Path], list[Path]]:
    cxr = [p for p in sorted((data / "cxr").rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    dicoms = sorted((data / "dicom").glob("*.dcm"))
    chest = [p for p in cxr if p.name not in MISLABELLED] + [p for p in dicoms if p.name in CHEST_DICOMS]
    other = [p for p in dicoms if p.name not in CHEST_DICOMS]
    odd = [p for p in cxr if p.name in MISLABELLED]
    return chest, other, odd


def evaluate(paths: list[Path], engine, learned, settings: ScopeSettings, batch: int):
    """Per decodable image: rule codes, learned distance, max softmax probability."""
    rows, undecodable = [], []
    inputs, pending = [], []

    def flush():
        if not inputs:
            return
        out = engine.run_batch(np.stack(inputs))
        dist = learned.distance(out.pooled) if learned.enabled else np.full(len(inputs), np.nan)
        for (name, codes), d, p, pooled in zip(pending, np.atleast_1d(dist), out.probabilities, out.pooled):
            rows.append({"name": name, "codes": codes, "distance": float(d), "max_p": float(p.max()),
                         "pooled": pooled})
        inputs.clear()
        pending.clear()

    for p in paths:
        try:
            image = load_image(p)
        except CxrError as exc:
            reason = getattr(exc, "reason", None)
            undecodable.append(f"{p.name} ({getattr(reason, 'value', reason) or 'error'})")
            continue
        pending.append((p.name, check_image(image, settings).codes))
        inputs.append(preprocess_for_card(image, engine.card.preprocessing))
        if len(inputs) >= batch:
            flush()
    flush()
    return rows, undecodable


def refit(chest: list[dict], other: list[dict]) -> None:
    """Statistics fitted by the training code on half the shared chest radiographs, held-out AUROC."""
    from cxr_desktop.training.ood import fit_ood, ood_distance

    pooled = np.stack([r["pooled"] for r in chest])
    train, val, held = pooled[0::2], pooled[1::4], pooled[3::4]
    tensors, info = fit_ood(train, np.zeros(len(train), int), val, n_classes=1, k=min(16, len(train) - 1))
    dh = ood_distance(held, tensors)
    do = ood_distance(np.stack([r["pooled"] for r in other]), tensors)
    t = info["threshold"]
    print(f"\n(c) statistics refitted on {len(train)} shared chest radiographs (k={info['k']}, threshold "
          f"{t:.3g} from {len(val)} validation images), evaluated on {len(held)} held-out chest radiographs")
    print(f"  Mahalanobis distance AUROC {auroc(dh, do):.3f}; at threshold: held-out chest flagged "
          f"{int((dh > t).sum())}/{len(dh)}, non-chest flagged {int((do > t).sum())}/{len(do)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--synthetic", action="store_true",
                    help="use a random-init model with synthetic statistics (until a trained model exists)")
    ap.add_argument("--input-size", type=int, default=224, help="input size of the --synthetic model")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--refit", action="store_true",
                    help="also refit the statistics (training code's fit_ood) on half of the shared chest "
                         "radiographs and evaluate on the held-out half vs the non-chest DICOMs")
    args = ap.parse_args(argv)

    if not (args.data / "cxr").is_dir() or not (args.data / "dicom").is_dir():
        print(f"shared data not found at {args.data} (expects cxr/ and dicom/)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="cxr-bench-scope-"))
    model_path = args.model
    if args.synthetic:
        model_path = synthetic_model(tmp, args.input_size)
    elif not model_path.exists():
        print(f"model file not found: {model_path}\n(run with --synthetic to try the script without one)")
        return 2

    t0 = time.perf_counter()
    engine = load_engine(model_path, options=EngineOptions(backend=args.backend))
    learned = from_loaded(engine)
    settings = ScopeSettings()
    card = engine.card
    print(f"model: {card.display_name} ({model_path.name}, sha256 {engine.model_sha256[:12]}), "
          f"input {card.input_size} px, {engine.device_label}")
    if (card.extra.get("ood") or {}).get("synthetic"):
        print("  NOTE: synthetic feature statistics - the learned-check figures below mean nothing.")
    print(f"  {learned.status}")

    chest_paths, other_paths, odd_paths = collect(args.data)
    chest, chest_bad = evaluate(chest_paths, engine, learned, settings, args.batch)
    other, other_bad = evaluate(other_paths, engine, learned, settings, args.batch)
    odd, _ = evaluate(odd_paths, engine, learned, settings, args.batch)
    print(f"images: chest radiographs {len(chest)} (of {len(chest_paths)}), non-chest DICOMs {len(other)} "
          f"(of {len(other_paths)}; undecodable: {', '.join(other_bad) or 'none'})"
          + (f"; chest undecodable: {', '.join(chest_bad)}" if chest_bad else ""))

    print("\n(a) scope rules (default settings): images flagged per rule")
    print(f"  {'rule':<26} {'chest':>9} {'non-chest':>11}")
    count_c = Counter(c for r in chest for c in set(r["codes"]))
    count_o = Counter(c for r in other for c in set(r["codes"]))
    for code in RULE_CODES[:-1]:
        print(f"  {code:<26} {count_c[code]:>4}/{len(chest):<4} {count_o[code]:>5}/{len(other):<4}")
    any_c = sum(bool(r["codes"]) for r in chest)
    any_o = sum(bool(r["codes"]) for r in other)
    print(f"  {'any rule':<26} {any_c:>4}/{len(chest):<4} {any_o:>5}/{len(other):<4}")
    missed = [r["name"] for r in other if not r["codes"]]
    print(f"  non-chest images no rule flags: {', '.join(missed) or 'none'}")
    if any_c:
        print("  chest images flagged: " + ", ".join(f"{r['name']} ({';'.join(r['codes'])})" for r in chest if r["codes"]))

    print("\n(b) learned check: AUROC chest (negative) vs non-chest (positive)")
    if not learned.enabled:
        print("  not available for this model (see status above)")
    else:
        dc = np.array([r["distance"] for r in chest])
        do = np.array([r["distance"] for r in other])
        msp_c = 1.0 - np.array([r["max_p"] for r in chest])
        msp_o = 1.0 - np.array([r["max_p"] for r in other])
        a_learned, a_msp = auroc(dc, do), auroc(msp_c, msp_o)
        print(f"  Mahalanobis distance (learned check)          AUROC {a_learned:.3f}")
        ratio = f"x{a_learned / a_msp:.2f}" if a_msp > 0 else "n/a"
        print(f"  baseline: max-softmax probability (1 - max p) AUROC {a_msp:.3f}   learned/baseline {ratio}")
        grey = [r for r in other if "colour_image" not in r["codes"]]
        if grey:
            dg = np.array([r["distance"] for r in grey])
            print(f"  greyscale non-chest only ({len(grey)} images, the harder case)  "
                  f"AUROC {auroc(dc, dg):.3f}  (baseline {auroc(msp_c, 1.0 - np.array([r['max_p'] for r in grey])):.3f})")
        t = learned.threshold
        print(f"  at the card's caution limit {t:.3g}: chest cautioned {int((dc > t).sum())}/{len(dc)}, "
              f"non-chest cautioned {int((do > t).sum())}/{len(do)}")
        for name, d in (("chest", dc), ("non-chest", do)):
            print(f"  distance {name:<10} median {np.median(d):8.2f}  range [{d.min():.2f}, {d.max():.2f}]")
        rules_or_learned = sum(bool(r["codes"]) or r["distance"] > t for r in other)
        print(f"  non-chest refused by a rule or cautioned: {rules_or_learned}/{len(other)}")
    if args.refit:
        refit(chest, other)
    for r in odd:
        print(f"\n  {r['name']} (mislabelled MONOCHROME1, shown as a negative): rules "
              f"{';'.join(r['codes']) or 'none'}, distance {r['distance']:.2f}")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
