"""Does the demonstration model's Grad-CAM point at the synthetic opacity? (pointing game)

    python training/check_demo_cam.py --model resources/models/demo-cxr.safetensors \
        --data build/demo/data --masks build/demo/masks

For every opacity image of the TEST split (the same patient-level split cxr-train
made: same seed and fractions), the heatmap the app shows (InferenceEngine,
Grad-CAM of "opacity") is compared with the opacity's mask written by
make_demo_dataset.py --masks: a hit is a heatmap maximum inside the opacity
(mask >= 0.25) or within a tolerance of 7 % of the image side of it (the
pointing game's 15 px at 224 px, Zhang et al. 2016). Chance level is the hit
rate of a uniformly random point. Also prints the share of heatmap mass inside
the opacity against the opacity's share of the image, and two coarse checks
that suit the model's small map (4 x 4 at 112 px): is the map heavier on the
opacity's side of the chest (chance 50 %), and is its hottest cell the one
holding the opacity's centre (chance 1 / cells).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_desktop.imaging import load_image  # noqa: E402
from cxr_desktop.inference.engine import EngineOptions, load_engine  # noqa: E402
from cxr_desktop.preprocess import preprocess_for_card  # noqa: E402
from cxr_desktop.training.scan import scan_folder  # noqa: E402
from cxr_desktop.training.split import split_groups  # noqa: E402
from cxr_desktop.training.synthetic import PATIENT_REGEX  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "resources" / "models" / "demo-cxr.safetensors")
    ap.add_argument("--data", type=Path, default=REPO / "build" / "demo" / "data")
    ap.add_argument("--masks", type=Path, default=REPO / "build" / "demo" / "masks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--test-fraction", type=float, default=0.15)
    ap.add_argument("--split", choices=("train", "val", "test"), default="test")
    args = ap.parse_args(argv)

    scan = scan_folder(args.data, patient_regex=PATIENT_REGEX, decode=False)
    items = scan.items
    split = split_groups([i.label for i in items], [i.group for i in items], val_fraction=args.val_fraction,
                         test_fraction=args.test_fraction, seed=args.seed)
    engine = load_engine(args.model, options=EngineOptions(device="cpu", backend="torch"))
    hits, chance, inside, area, scores, side, cell = [], [], [], [], [], [], []
    grid = 0
    for i in split.indices(args.split):
        it = items[i]
        mask_path = args.masks / Path(it.rel).name
        if it.cls != "opacity" or not mask_path.exists():
            continue
        image = load_image(it.path)
        res = engine.predict(image, cam=True, cam_class="opacity")
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
        mask = cv2.resize(mask, (image.columns, image.rows), interpolation=cv2.INTER_LINEAR) >= 0.25
        tol = max(1, round(0.07 * max(image.rows, image.columns)))
        near = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tol + 1,) * 2)) > 0
        heat = res.heatmap
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        hits.append(bool(near[y, x]))
        chance.append(float(near.mean()))
        inside.append(float(heat[mask].sum() / max(heat.sum(), 1e-9)))
        area.append(float(mask.mean()))
        raw = engine.run_batch(preprocess_for_card(image, engine.card.preprocessing)[None], cam=True,
                               cam_classes=[engine.card.classes.index("opacity")]).cams[0]  # the map itself
        grid = raw.shape[0]
        ys, xs = np.nonzero(mask)
        cy, cx = ys.mean() / mask.shape[0], xs.mean() / mask.shape[1]
        half = raw.shape[1] // 2
        side.append((cx < 0.5) == (raw[:, :half].sum() > raw[:, raw.shape[1] - half:].sum()))
        ay, ax = np.unravel_index(int(np.argmax(raw)), raw.shape)
        cell.append(ay == min(grid - 1, int(cy * grid)) and ax == min(raw.shape[1] - 1, int(cx * raw.shape[1])))
        scores.append(res.prediction.score)
    n = len(hits)
    if not n:
        print("no opacity images with masks in that split")
        return 1
    print(f"{args.split} split: {n} opacity images; model {engine.card.display_name}, input {engine.card.input_size} px")
    print(f"pointing game: heatmap maximum on the opacity (7 % tolerance) in {np.mean(hits):.1%} of images "
          f"(random point: {np.mean(chance):.1%})")
    print(f"heatmap mass inside the opacity: {np.mean(inside):.1%} (opacity area {np.mean(area):.1%})")
    print(f"map heavier on the opacity's side of the chest: {np.mean(side):.1%} (chance 50%)")
    print(f"hottest cell of the {grid}x{grid} map holds the opacity's centre: {np.mean(cell):.1%} "
          f"(chance {1 / grid / grid:.1%})")
    print(f"mean opacity score on these images: {np.mean(scores):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
