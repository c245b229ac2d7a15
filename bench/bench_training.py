"""Training epoch time: our engine vs the seed recipe, on identical data, in one run.

Baseline "seed recipe" (zyf2316's training script, as in the seed projects):
full fine-tune of ResNet50, Adam lr 1e-4, batch 4, a plain loop that opens every
image with PIL and applies torchvision transforms (Resize, ToTensor, Normalize)
in every epoch, no feature cache; its epoch = one training pass + one
validation pass.

Ours (``cxr_desktop.training.engine.train``, same images, same input size, same
train/validation split): images decoded once into a cache, then
  stage 1 - head only on backbone features computed once (cached); the one-off
            feature pass is reported separately and amortised over the epochs;
  stage 2 - fine-tuning: ``all`` (the whole network, like the seed), ``layer3``
            (the last two blocks) and ``layer4`` (the last block: what the default
            ``--finetune auto`` trains on a CPU), batch 32, DataLoader.
Epoch times below are training + validation passes, from the engine's own
``EpochDone.seconds``. Goal: >= 2x faster than the seed recipe.

Usage: python bench/bench_training.py [--images 48] [--input-size 224] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_desktop.training.config import TrainConfig  # noqa: E402
from cxr_desktop.training.engine import run_to_end  # noqa: E402
from cxr_desktop.training.events import EpochDone, FeatureProgress, PrepareDone, StageStarted  # noqa: E402
from cxr_desktop.training.scan import scan_folder  # noqa: E402
from cxr_desktop.training.split import split_groups  # noqa: E402
from cxr_desktop.training.synthetic import PATIENT_REGEX, find_sources, write_dataset  # noqa: E402


def seed_recipe_epochs(train_items, val_items, input_size: int, epochs: int) -> list[float]:
    """The baseline: per-image PIL loading + torchvision transforms every epoch, batch 4, Adam 1e-4."""
    from PIL import Image
    from torchvision import transforms
    from torchvision.models import resnet50

    tf = transforms.Compose([
        transforms.Resize((input_size, input_size)),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    torch.manual_seed(0)
    model = resnet50(weights=None)
    model.fc = torch.nn.Linear(model.fc.in_features, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        order = np.random.permutation(len(train_items))
        for b in range(0, len(order), 4):
            batch = [train_items[i] for i in order[b:b + 4]]
            x = torch.stack([tf(Image.open(it.path).convert("RGB")) for it in batch])
            y = torch.tensor([it.label for it in batch])
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for b in range(0, len(val_items), 4):
                batch = val_items[b:b + 4]
                model(torch.stack([tf(Image.open(it.path).convert("RGB")) for it in batch]))
        times.append(time.perf_counter() - t0)
    return times


def ours(data: Path, work: Path, input_size: int, scope: str, frozen: int, finetune: int) -> dict:
    out = work / f"ours-{scope}.safetensors"
    cfg = TrainConfig(data_dir=str(data), out=str(out), input_size=input_size, weights="none",
                      epochs_frozen=frozen, epochs_finetune=finetune, finetune=scope, batch_size=32,
                      patient_regex=PATIENT_REGEX, val_fraction=0.2, test_fraction=0.0, seed=0, bootstrap=20,
                      augment="light", patience=0, decode_check=False)
    rec: dict = {"epochs": {1: [], 2: []}, "feature_s": 0.0, "prepare_s": 0.0}
    marks: dict = {}

    def on(ev):
        if isinstance(ev, PrepareDone):
            rec["prepare_s"] = ev.seconds
        elif isinstance(ev, StageStarted) and ev.stage == 1:
            marks["s1"] = time.perf_counter()
        elif isinstance(ev, FeatureProgress) and ev.split == "val" and ev.done == ev.total:
            rec["feature_s"] = time.perf_counter() - marks.get("s1", time.perf_counter())
        elif isinstance(ev, EpochDone):
            rec["epochs"][ev.stage].append(ev.seconds)

    run_to_end(cfg, on_event=on)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--images", type=int, default=80, help="images in the benchmark folder (80: 64 train + 16 val)")
    ap.add_argument("--image-side", type=int, default=1024, help="side of the PNGs on disk (decoding cost)")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=2, help="epochs timed per recipe (stage 1 uses 3x this)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="cxr-bench-train-"))
    import os

    os.environ.setdefault("CXR_CACHE_DIR", str(tmp / "cache"))
    sources = find_sources(args.data / "cxr", max_side=args.image_side)
    variants = 4
    n_src = max(2, args.images // variants)
    data = tmp / "data"
    write_dataset(sources[:n_src], data, variants=variants, size=args.image_side, seed=0)
    scan = scan_folder(data, patient_regex=PATIENT_REGEX, decode=False)
    items = scan.items
    split = split_groups([i.label for i in items], [i.group for i in items], val_fraction=0.2, test_fraction=0.0,
                         seed=0)
    train_items = [items[i] for i in split.train]
    val_items = [items[i] for i in split.val]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {len(items)} PNGs of "
          f"{args.image_side} px ({len(train_items)} train / {len(val_items)} val), input {args.input_size} px")
    if len(train_items) % 32:
        print(f"note: {len(train_items) % 32} training images per epoch fall in ours' dropped last partial batch "
              "(choose --images so that the training split is a multiple of 32 for identical work)")

    t = seed_recipe_epochs(train_items, val_items, args.input_size, args.epochs)
    seed_epoch = float(np.mean(t[1:] if len(t) > 1 else t))
    print(f"seed recipe (baseline)        : epoch {seed_epoch:7.2f} s  (epochs: {', '.join(f'{x:.1f}' for x in t)})")

    results = {}
    for scope in ("all", "layer3", "layer4"):
        frozen = 3 * args.epochs if scope == "all" else 0
        r = ours(data, tmp, args.input_size, scope, frozen, args.epochs)
        results[scope] = r
        s2 = r["epochs"][2]
        s2_epoch = float(np.mean(s2[1:] if len(s2) > 1 else s2))
        if scope == "all":
            s1 = r["epochs"][1]
            s1_epoch = float(np.mean(s1))
            amort = s1_epoch + r["feature_s"] / max(1, len(s1))
            print(f"images decoded once (cache)   : {r['prepare_s']:7.2f} s one-off")
            print(f"ours stage 1 (cached features): epoch {s1_epoch:7.2f} s  -> {seed_epoch / s1_epoch:6.1f}x faster; "
                  f"one-off feature pass {r['feature_s']:.1f} s; amortised over {len(s1)} epochs "
                  f"{amort:.2f} s -> {seed_epoch / amort:.1f}x")
        default = "  <- default on a CPU (--finetune auto)" if scope == "layer4" else ""
        print(f"ours stage 2 (fine-tune {scope:6s}): epoch {s2_epoch:7.2f} s  -> {seed_epoch / s2_epoch:6.2f}x faster "
              f"(epochs: {', '.join(f'{x:.1f}' for x in s2)}){default}")
    print("goal: >= 2x vs the seed recipe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
