"""Recalibrate a model file's caution limit (the learned scope check) on its held-out validation patients.

    python training/recalibrate_scope.py MODEL --data FOLDER [--out FILE] [--percentile P] [--dry-run]

    e.g. (the demonstration model, its data set rebuilt exactly as training/build_demo_model.sh does):
    python training/make_demo_dataset.py --out build/scope/data --masks build/scope/masks --variants 16 \
        --size 256 --seed 0 --contrast 0.35 0.6 --radius 0.07 0.13
    python training/recalibrate_scope.py resources/models/demo-cxr.safetensors --data build/scope/data

The training engine calibrates every new model this way (cxr_desktop.training.ood.fit_ood); this
script brings a model file written before that (or one whose limit came from a leaky split) to
the same rule, without retraining: FOLDER must be the model's training folder. Its patient-level
split is reproduced from the card (patient pattern, seed, validation/test fractions) and must give
the card's image counts per split and class, the card's validation patients (``groups_digest``,
models calibrated by this version) or else the card's validation AUC (within --auc-tolerance);
otherwise nothing is written, because calibrating on training patients gives a limit that is too
low. Models split before the patient keys were unified are reproduced with the file-name keys of
that time. The validation split's
images go through the app's own inference path (decode, preprocess, engine); the limit is the
patient-group split-conformal quantile of their feature distances
(:func:`cxr_desktop.training.ood.calibrate_threshold`), for a target caution rate of
``1 - P / 100`` (P defaults to the card's ``percentile``). The feature statistics themselves and
every weight are copied unchanged; only ``card.extra["ood"]`` (threshold, threshold_split,
calibration) changes, and the written file must load and verify. The test split's caution rate is
printed and recorded as a check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_desktop.atomic import write_bytes_atomic  # noqa: E402
from cxr_desktop.imaging import load_image  # noqa: E402
from cxr_desktop.inference.engine import EngineOptions, load_engine  # noqa: E402
from cxr_desktop.model.modelfile import CARD_KEY, load_model  # noqa: E402
from cxr_desktop.preprocess import preprocess_for_card  # noqa: E402
from cxr_desktop.training.ood import calibrate_threshold, groups_digest, ood_distance  # noqa: E402
from cxr_desktop.training.scan import hash_group, scan_folder  # noqa: E402
from cxr_desktop.training.split import split_groups  # noqa: E402


def _groupings(items, regex: str | None):
    """Candidate patient groupings of the scan: today's keys, then the file-name key of earlier versions.

    Models trained before the patient keys were unified (one key space for DICOM Patient ID and
    file-name pattern) were split on ``hash_group("pattern", match)``; the demonstration model is one.
    """
    yield "current patient keys", [it.group for it in items]
    if regex:
        pattern = re.compile(regex)
        legacy = []
        for it in items:
            m = pattern.search(Path(it.path).name)
            if m is None:
                return
            legacy.append(hash_group("pattern", m.group(1) if m.groups() and m.group(1) is not None else m.group(0)))
        yield "file-name pattern keys of earlier versions", legacy


def reproduce_split(card, data: Path):
    """(scan items, groups, Split, how) of ``data`` as the model's training made them.

    Candidate splits must give the card's image counts per split and class; the validation
    split is then proved by the card's ``groups_digest`` when it has one (models calibrated by
    this version), else by the validation AUC recorded on the card (checked in :func:`main`).
    Raises ValueError when no candidate fits.
    """
    prov = card.provenance or {}
    settings = prov.get("settings") or {}
    info = prov.get("data") or {}
    regex = info.get("patient_pattern") or settings.get("patient_regex")
    scan = scan_folder(data, patient_regex=regex, decode=False)
    classes = list(getattr(scan, "classes", []) or sorted({it.cls for it in scan.items}))
    if classes != list(card.classes):
        raise ValueError(f"{data} has classes {classes}; the model has {list(card.classes)}")
    items = scan.items
    want = info.get("splits") or {}
    digest = ((card.extra or {}).get("ood") or {}).get("calibration", {}).get("groups_digest")
    candidates = []
    for how, groups in _groupings(items, regex):
        split = split_groups([it.label for it in items], groups,
                             val_fraction=float(settings.get("val_fraction", 0.15)),
                             test_fraction=float(settings.get("test_fraction", 0.15)),
                             seed=int(settings.get("seed", info.get("split_seed", 0))))
        counts_ok = all(
            {c: sum(items[i].cls == c for i in split.indices(name)) for c in card.classes}
            == {c: int((want.get(name) or {}).get(c, 0)) for c in card.classes}
            for name in ("train", "val", "test")) if want else True
        if not counts_ok:
            continue
        if digest and groups_digest(groups[i] for i in split.indices("val")) != digest:
            continue
        candidates.append((groups, split, how))
    if not candidates:
        raise ValueError(f"no patient split of {data} gives the model's validation split (counts per class"
                         f"{' and validation patients' if digest else ''}): this is not the model's training folder")
    return items, candidates


def pooled_features(engine, paths: list[str], batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features, probabilities) through the app's inference path."""
    out, probs = [], []
    for i in range(0, len(paths), batch):
        x = np.stack([preprocess_for_card(load_image(p), engine.card.preprocessing) for p in paths[i:i + batch]])
        r = engine.run_batch(x)
        out.append(r.pooled)
        probs.append(r.probabilities)
    if not out:
        return np.zeros((0, 2048), np.float32), np.zeros((0, len(engine.card.classes)))
    return np.concatenate(out), np.concatenate(probs)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def rewrite_card(src: Path, dst: Path, ood: dict) -> str:
    """Copy every tensor of ``src`` byte for byte with ``card.extra['ood']`` replaced; returns the new sha256."""
    import hashlib

    from safetensors import safe_open
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    data = src.read_bytes()
    with safe_open(str(src), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
    card = json.loads(metadata[CARD_KEY])
    card.setdefault("extra", {})["ood"] = ood
    metadata[CARD_KEY] = json.dumps(card, sort_keys=True)
    out = st_save(st_load(data), metadata=metadata)
    write_bytes_atomic(dst, out)
    again = load_model(dst)  # must load, and verify where the card carries a tensors checksum
    if again.card.tensors_sha256 and not again.weights_verified:
        raise RuntimeError(f"{dst} did not verify after rewriting; do not use it")
    return hashlib.sha256(out).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="the model's training folder (class subfolders)")
    ap.add_argument("--out", type=Path, help="write here (default: rewrite MODEL in place, atomically)")
    ap.add_argument("--percentile", type=float, help="100 x (1 - target caution rate); default: the card's")
    ap.add_argument("--dry-run", action="store_true", help="print the new limit, write nothing")
    ap.add_argument("--auc-tolerance", type=float, default=0.002,
                    help="how close the reproduced validation AUC must be to the card's (default 0.002)")
    args = ap.parse_args(argv)

    loaded = load_model(args.model)
    ood = dict((loaded.card.extra or {}).get("ood") or {})
    if not ood or not loaded.extra_tensors:
        print(f"{args.model.name} stores no feature statistics; train it with cxr-train", file=sys.stderr)
        return 2
    try:
        items, candidates = reproduce_split(loaded.card, args.data)
    except ValueError as exc:
        print(f"cannot recalibrate: {exc}", file=sys.stderr)
        return 2
    percentile = float(args.percentile if args.percentile is not None else ood.get("percentile", 99.0))
    alpha = 1.0 - percentile / 100.0
    engine = load_engine(args.model, options=EngineOptions(device="cpu", backend="torch"))
    card_auc = ((loaded.card.metrics or {}).get("validation") or {}).get("auc")
    chosen = None
    for groups, split, how in candidates:
        train_groups = {groups[i] for i in split.indices("train")}
        val_idx = [i for i in split.indices("val") if groups[i] not in train_groups]
        pooled, probs = pooled_features(engine, [items[i].path for i in val_idx])
        y = np.array([items[i].cls == loaded.card.positive_class for i in val_idx])
        got = auc(y, probs[:, loaded.card.positive_index])
        print(f"  split by {how}: validation AUC {got:.4f} (card: {card_auc})")
        if card_auc is None or abs(got - float(card_auc)) <= args.auc_tolerance:
            chosen = (groups, split, how, val_idx, pooled)
            break
    if chosen is None:
        print("cannot recalibrate: no candidate split reproduces the validation AUC on the model's card, so "
              "its validation patients cannot be told from its training patients", file=sys.stderr)
        return 2
    groups, split, how, val_idx, pooled = chosen
    test_idx = split.indices("test")
    d_val = ood_distance(pooled, loaded.extra_tensors)
    threshold, calib = calibrate_threshold(d_val, [groups[i] for i in val_idx], alpha=alpha)
    calib.update(split="validation", excluded_images_of_training_groups=len(split.indices("val")) - len(val_idx),
                 method="patient-group split-conformal quantile of held-out feature distances",
                 recalibrated={"script": "training/recalibrate_scope.py", "data_folder": args.data.name,
                               "split_reproduced_by": how,
                               "previous_threshold": ood.get("threshold"), "previous_split": ood.get("threshold_split"),
                               "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    if test_idx:
        d_test = ood_distance(pooled_features(engine, [items[i].path for i in test_idx])[0], loaded.extra_tensors)
        calib["test_caution_rate"] = float(np.mean(d_test > threshold))
        calib["test_images"] = len(test_idx)
    new = {**ood, "threshold": threshold, "percentile": percentile, "threshold_split": "validation",
           "calibration": calib}
    print(f"{args.model.name}: limit {ood.get('threshold')} -> {threshold:.4f} "
          f"({calib['groups']} validation patients, {calib['images']} images; {calib['rule']})")
    if "test_caution_rate" in calib:
        print(f"  test split caution rate at the new limit: {calib['test_caution_rate']:.1%} "
              f"of {calib['test_images']} images")
    if args.dry_run:
        return 0
    out = args.out or args.model
    sha = rewrite_card(args.model, out, new)
    print(f"wrote {out} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
