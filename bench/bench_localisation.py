"""Do the heatmaps point at the finding? Localisation benchmark on the synthetic opacity set (issue 12.2).

    python bench/bench_localisation.py \
        --model demo-2=build/demo/demo-2.safetensors --model demo-2@os16=build/demo/demo-2.safetensors@16 \
        --model demo-3=resources/models/demo-cxr.safetensors --baseline demo-2:gradcam

Data: the set ``training/make_demo_dataset.py --masks`` writes (real radiographs from
``../shared/data/cxr`` with and without a synthetic focal opacity, plus each opacity's
mask), and of it the TEST split that ``cxr-train`` makes with the same seed and fractions
(split by base image: every variant of one source radiograph is in one split).

For each model (``NAME=FILE``, or ``NAME=FILE@16`` to run the file's weights with a
dilated last stage, output stride 16, without retraining) the backbone runs once per
image; every CAM method (``cxr_desktop.inference.cam.CAM_METHODS``) then explains the
positive class from the same activations, exactly as the app's engine does, and the map
is resized to the image (the heatmap the viewer shows). Per opacity image:

- pointing game, strict: the heatmap's maximum lies inside the opacity (mask >= 0.25);
- pointing game, tolerant: ... or within 7 % of the image's short side of it (the
  pointing game's 15 px at 224 px, Zhang et al. 2016);
- mass: the share of heatmap mass inside the opacity, against its share of the image;
- chance: the same hit rates for a uniformly random point (the mask's / the widened
  mask's share of the image).

Test ROC AUC uses every test image. 95 % CIs: percentile bootstrap over base images
(resampled source radiographs; the same resamples for every model and method, so
differences to the baseline are paired). One run prints all figures and the ratios and
differences against the named baseline, and the goals of issue 12.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_desktop.imaging import load_image  # noqa: E402
from cxr_desktop.inference.cam import CAM_METHODS, make_cam, to_image_geometry  # noqa: E402
from cxr_desktop.inference.engine import EngineOptions, InferenceEngine  # noqa: E402
from cxr_desktop.model.architecture import with_output_stride  # noqa: E402
from cxr_desktop.model.modelfile import load_model  # noqa: E402
from cxr_desktop.preprocess import preprocess_for_card  # noqa: E402
from cxr_desktop.training.metrics import roc_auc  # noqa: E402
from cxr_desktop.training.scan import scan_folder  # noqa: E402
from cxr_desktop.training.split import split_groups  # noqa: E402
from cxr_desktop.training.synthetic import PATIENT_REGEX  # noqa: E402

MASK_LEVEL = 0.25  # the opacity: where its blend mask is at least this
TOLERANCE = 0.07  # tolerant pointing: fraction of the image's short side
GOALS = {"tolerant": 0.70, "strict": 0.35}  # issue 12.2


@dataclass
class Sample:
    path: Path
    label: int  # 1 = opacity
    group: str  # base image
    mask: np.ndarray | None  # bool, image geometry; positives only


@dataclass
class Figures:
    """Per-image values of one model + method (positives for localisation, all images for AUC)."""

    strict: np.ndarray
    tolerant: np.ndarray
    mass: np.ndarray
    area: np.ndarray
    chance_strict: np.ndarray
    chance_tolerant: np.ndarray
    scores: np.ndarray
    extra: dict = field(default_factory=dict)


def test_samples(data: Path, masks: Path, *, seed: int, val_fraction: float, test_fraction: float,
                 split_name: str, test_dir: Path | None = None) -> list[Sample]:
    """The split's images as ``cxr-train`` splits the folder (same scan, grouping and seed), or all of ``test_dir``."""
    scan = scan_folder(test_dir or data, patient_regex=PATIENT_REGEX, decode=False)
    items = scan.items
    if test_dir is not None:
        chosen = list(range(len(items)))
    else:
        split = split_groups([i.label for i in items], [i.group for i in items], val_fraction=val_fraction,
                             test_fraction=test_fraction, seed=seed)
        chosen = split.indices(split_name)
    out = []
    for i in chosen:
        it = items[i]
        group = re.match(PATIENT_REGEX, Path(it.rel).name).group(1)
        mask = None
        if it.cls == "opacity":
            mp = masks / Path(it.rel).name
            if not mp.exists():
                raise SystemExit(f"no mask for {it.rel} in {masks}: rebuild the set with --masks")
            mask = cv2.imread(str(mp), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
        out.append(Sample(Path(it.path), 1 if it.cls == "opacity" else 0, group, mask))
    return out


def load_engine_at(spec: str) -> InferenceEngine:
    """``FILE`` or ``FILE@16``: a model file, optionally with its last stage dilated (no retraining)."""
    path, _, stride = spec.partition("@")
    loaded = load_model(path)
    model, card = loaded.model, loaded.card
    if stride:
        model = with_output_stride(model, int(stride))
        card.output_stride = int(stride)
    return InferenceEngine(model, card, options=EngineOptions(device="cpu", backend="torch"))


def evaluate(engine: InferenceEngine, samples: list[Sample], methods: list[str], batch: int = 8
             ) -> tuple[dict[str, Figures], float]:
    """Figures per method; the backbone runs once per image. Returns (figures, seconds per image)."""
    pos = engine.card.positive_index
    cams = {m: make_cam(m, engine.head) for m in methods}
    per: dict[str, dict[str, list]] = {m: {k: [] for k in ("strict", "tolerant", "mass", "area", "cs", "ct")}
                                       for m in methods}
    scores = []
    t0 = time.perf_counter()
    for b0 in range(0, len(samples), batch):
        chunk = samples[b0:b0 + batch]
        images = [load_image(s.path) for s in chunk]
        x = np.stack([preprocess_for_card(im, engine.card.preprocessing) for im in images])
        with torch.inference_mode():
            feats = engine.backend.features(x).float()
            probs = torch.softmax(engine.head(feats), dim=1).numpy()
        scores += list(probs[:, pos])
        targets = torch.full((len(chunk),), pos, dtype=torch.long)
        maps = {m: cam(feats, targets) for m, cam in cams.items()}
        for j, (s, im) in enumerate(zip(chunk, images)):
            if s.mask is None:
                continue
            rows, cols = im.full_shape
            soft = cv2.resize(s.mask, (cols, rows), interpolation=cv2.INTER_LINEAR)
            lesion = soft >= MASK_LEVEL
            tol = max(1, round(TOLERANCE * min(rows, cols)))
            near = cv2.dilate(lesion.astype(np.uint8),
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tol + 1,) * 2)) > 0
            for m in methods:
                heat = to_image_geometry(maps[m][j], rows, cols)
                y, xx = np.unravel_index(int(np.argmax(heat)), heat.shape)
                d = per[m]
                d["strict"].append(bool(lesion[y, xx]))
                d["tolerant"].append(bool(near[y, xx]))
                d["mass"].append(float(heat[lesion].sum() / max(float(heat.sum()), 1e-9)))
                d["area"].append(float(lesion.mean()))
                d["cs"].append(float(lesion.mean()))
                d["ct"].append(float(near.mean()))
    secs = (time.perf_counter() - t0) / max(1, len(samples))
    sc = np.asarray(scores, dtype=np.float64)
    out = {}
    for m in methods:
        d = per[m]
        out[m] = Figures(np.asarray(d["strict"], float), np.asarray(d["tolerant"], float), np.asarray(d["mass"]),
                         np.asarray(d["area"]), np.asarray(d["cs"]), np.asarray(d["ct"]), sc)
    return out, secs


METRICS = ("tolerant", "strict", "mass", "auc")
LABELS = {"tolerant": "pointing, tolerant", "strict": "pointing, strict", "mass": "mass on lesion", "auc": "test ROC AUC"}


def statistic(f: Figures, metric: str, pos_idx: np.ndarray, all_idx: np.ndarray, labels: np.ndarray) -> float:
    if metric == "auc":
        return roc_auc(labels[all_idx], f.scores[all_idx])
    return float(getattr(f, metric)[pos_idx].mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="NAME=FILE[@16]")
    ap.add_argument("--methods", nargs="+", default=list(CAM_METHODS), choices=list(CAM_METHODS))
    ap.add_argument("--baseline", default=None, help="NAME:METHOD the ratios refer to (default: first model, gradcam)")
    ap.add_argument("--data", type=Path, default=REPO / "build" / "demo" / "data")
    ap.add_argument("--masks", type=Path, default=REPO / "build" / "demo" / "masks")
    ap.add_argument("--seed", type=int, default=0, help="cxr-train's split seed")
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--test-fraction", type=float, default=0.15)
    ap.add_argument("--split", choices=("train", "val", "test"), default="test")
    ap.add_argument("--test-dir", type=Path, help="a separate test folder (as cxr-train --test): all of it is the "
                    "test set, instead of a split of --data")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shortcuts", action="store_true", help="also run the training report's shortcut check "
                    "(heatmap mass on the border and on burned-in marks, per TP/FP/FN/TN) for each model")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))

    samples = test_samples(args.data, args.masks, seed=args.seed, val_fraction=args.val_fraction,
                           test_fraction=args.test_fraction, split_name=args.split, test_dir=args.test_dir)
    labels = np.asarray([s.label for s in samples])
    groups = np.asarray([s.group for s in samples])
    pos_groups = groups[labels == 1]
    uniq = sorted(set(groups))
    where = f"test folder {args.test_dir}" if args.test_dir else f"{args.split} split of {args.data} (seed {args.seed})"
    print(f"{where}: {len(samples)} images, {int(labels.sum())} with an "
          f"opacity, {len(uniq)} base images ({', '.join(uniq)}); CIs: {args.bootstrap} bootstrap resamples of base "
          f"images; torch threads {torch.get_num_threads()}")

    results: dict[tuple[str, str], Figures] = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        eng = load_engine_at(path)
        figs, secs = evaluate(eng, samples, args.methods)
        grid = eng.card.input_size // eng.card.output_stride
        print(f"  {name}: {eng.card.display_name}, {eng.card.input_size} px, output stride {eng.card.output_stride} "
              f"({grid}x{grid} map); {secs:.2f} s/image (backbone once, {len(args.methods)} CAM methods)")
        for m, f in figs.items():
            results[(name, m)] = f
        if args.shortcuts:
            from cxr_desktop.training.shortcuts import check_model

            if "@" in path:
                print("    shortcut check: skipped (runs the model file as saved)")
            else:
                check = check_model(path, [str(s.path) for s in samples], labels,
                                    next(iter(figs.values())).scores, eng.card.decision_threshold)
                print("\n".join("    " + ln for ln in check.lines()))

    base_key = tuple(args.baseline.split(":", 1)) if args.baseline else (args.model[0].partition("=")[0], "gradcam")
    if base_key not in results:
        raise SystemExit(f"baseline {base_key} is not among the runs")

    # paired bootstrap over base images: the same resampled groups for every run
    rng = np.random.default_rng(0)
    idx_by_group = {g: np.flatnonzero(groups == g) for g in uniq}
    pos_by_group = {g: np.flatnonzero(pos_groups == g) for g in uniq}
    draws = [rng.choice(len(uniq), size=len(uniq), replace=True) for _ in range(args.bootstrap)]
    all_idx0 = np.arange(len(samples))
    pos_idx0 = np.arange(int(labels.sum()))
    boot: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, f in results.items():
        vals = {m: np.empty(args.bootstrap) for m in METRICS}
        for b, d in enumerate(draws):
            gs = [uniq[k] for k in d]
            ai = np.concatenate([idx_by_group[g] for g in gs])
            pi = np.concatenate([pos_by_group[g] for g in gs])
            for m in METRICS:
                vals[m][b] = statistic(f, m, pi, ai, labels)
        boot[key] = vals

    def ci(a: np.ndarray) -> tuple[float, float]:
        a = a[np.isfinite(a)]
        return float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5))

    base = results[base_key]
    b_chance_s, b_chance_t = base.chance_strict.mean(), base.chance_tolerant.mean()
    print(f"\nchance (a uniformly random point): strict {b_chance_s:.1%}, tolerant {b_chance_t:.1%}; "
          f"opacity area {base.area.mean():.1%} of the image (what a flat heatmap puts on it)")
    print(f"baseline: {base_key[0]} with {base_key[1]}; ratio = figure / baseline's, diff = paired difference "
          "(95 % CI)\n")
    head = f"{'model':<14}{'method':<11}" + "".join(f"{LABELS[m]:>30}" for m in METRICS)
    print(head)
    for key, f in results.items():
        row = f"{key[0]:<14}{key[1]:<11}"
        for m in METRICS:
            v = statistic(f, m, pos_idx0, all_idx0, labels)
            lo, hi = ci(boot[key][m])
            fmt = "{:.3f}" if m == "auc" else "{:.1%}"
            row += f"{fmt.format(v):>12} ({fmt.format(lo)}-{fmt.format(hi)})".rjust(30)
        print(row)
    print("\nagainst the baseline (ratio; paired difference with 95 % CI):")
    for key, f in results.items():
        if key == base_key:
            continue
        parts = []
        for m in METRICS:
            v = statistic(f, m, pos_idx0, all_idx0, labels)
            bv = statistic(base, m, pos_idx0, all_idx0, labels)
            diff = boot[key][m] - boot[base_key][m]
            lo, hi = ci(diff)
            parts.append(f"{m} x{v / bv if bv else float('nan'):.2f} ({v - bv:+.3f}, {lo:+.3f}..{hi:+.3f})")
        print(f"  {key[0]:<14}{key[1]:<11}" + "; ".join(parts))
    print(f"\ngoals (issue 12.2): tolerant >= {GOALS['tolerant']:.0%}, strict >= {GOALS['strict']:.0%}, "
          f"AUC no worse than the baseline's {statistic(base, 'auc', pos_idx0, all_idx0, labels):.3f}")
    for key, f in results.items():
        t = f.tolerant.mean()
        s = f.strict.mean()
        auc = statistic(f, "auc", pos_idx0, all_idx0, labels)
        dlo, _ = ci(boot[key]["auc"] - boot[base_key]["auc"])
        bauc = statistic(base, "auc", pos_idx0, all_idx0, labels)
        ok = t >= GOALS["tolerant"] and s >= GOALS["strict"] and auc >= bauc - 1e-9
        print(f"  {key[0]:<14}{key[1]:<11}tolerant {t:.1%} {'ok' if t >= GOALS['tolerant'] else 'MISSED'}, "
              f"strict {s:.1%} {'ok' if s >= GOALS['strict'] else 'MISSED'}, AUC {auc:.3f} "
              f"({'>=' if auc >= bauc - 1e-9 else '<'} baseline; paired diff CI lower bound {dlo:+.3f})"
              f" -> {'MEETS' if ok else 'does not meet'} the goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
