"""Training data pipeline = the product's preprocessing; augmentation; input-safety statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_desktop.preprocess import load_for_model, preprocess
from cxr_desktop.training.data import AUGMENT_PRESETS, CachedImageDataset, augment_grey, prepare_images
from cxr_desktop.training.ood import fit_ood, ood_distance
from cxr_desktop.training.scan import scan_folder
from cxr_desktop.training.synthetic import add_opacity, find_sources, make_variant, write_dataset


@pytest.fixture(scope="module")
def folder(tmp_path_factory, cxr_dir):
    root = tmp_path_factory.mktemp("data")
    for cls, name in (("a", "00000001_000.png"), ("a", "fake_monochrome1.dcm"), ("b", "16747_3_1.jpg"),
                      ("b", "tbx11k_tb_tb0005.png")):
        (root / cls).mkdir(exist_ok=True)
        (root / cls / name).write_bytes((cxr_dir / name).read_bytes())
    (root / "b" / "cut.png").write_bytes((cxr_dir / "00027426_000.png").read_bytes()[:5000])
    return root


def test_unaugmented_samples_equal_the_inference_preprocessing(folder, tmp_path):
    scan = scan_folder(folder, decode=False, workers=1)
    gen = prepare_images(scan.items, 96, tmp_path / "cache", workers=2)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            cache = stop.value
            break
    assert [e.done for e in events] == list(range(1, len(scan.items) + 1))
    assert [p.rel for p in cache.problems] == ["b/cut.png"] and cache.problems[0].reason == "truncated"
    ok = [i for i, flag in enumerate(cache.ok) if flag]
    ds = CachedImageDataset(cache.path, ok, [scan.items[i].label for i in ok])
    for k, i in enumerate(ok):
        x, y = ds[k]
        want = preprocess(load_for_model(scan.items[i].path, input_size=96), input_size=96)  # as the app sees it
        assert y == scan.items[i].label
        assert np.abs(x.numpy() - want).max() < 5e-3  # float16 cache
    # a second preparation reuses the finished cache
    again = prepare_images(scan.items, 96, tmp_path / "cache")
    with pytest.raises(StopIteration) as stop:
        next(again)
    assert stop.value.value.reused


def test_augmentation_is_plausible_and_reproducible():
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    grey = (0.2 + 0.5 * xx + 0.3 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.6) ** 2) / 0.02)).clip(0, 1).astype(np.float32)
    spec = AUGMENT_PRESETS["standard"]
    a = augment_grey(grey, np.random.default_rng(5), spec)
    b = augment_grey(grey, np.random.default_rng(5), spec)
    c = augment_grey(grey, np.random.default_rng(6), spec)
    assert a.shape == grey.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.corrcoef(a.ravel(), grey.ravel())[0, 1] > 0.7  # still the same picture, slightly changed
    assert np.abs(a - grey).mean() > 0.005
    assert not spec.hflip and AUGMENT_PRESETS["none"].active is False


def test_synthetic_opacity_is_a_local_brightening(cxr_dir):
    src = find_sources(cxr_dir, max_side=256, limit=1)[0]
    rng = np.random.default_rng(3)
    img = make_variant(src.grey, rng, 128)
    out, mask = add_opacity(img, rng)
    diff = out - img
    assert diff.min() >= -1e-6 and diff.max() > 0.1
    inside = mask > 0.5
    assert inside.any() and diff[inside].mean() > 5 * diff[~inside].mean()


def test_demo_dataset_is_deterministic(tmp_path, cxr_dir):
    srcs = find_sources(cxr_dir, max_side=128, limit=3)
    write_dataset(srcs, tmp_path / "a", variants=2, size=48, seed=4)
    write_dataset(srcs, tmp_path / "b", variants=2, size=48, seed=4)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 6 and all((tmp_path / "b" / f).read_bytes() == (tmp_path / "a" / f).read_bytes() for f in files)
    assert {f.parts[0] for f in files} == {"normal", "opacity"}


def test_ood_distance_separates_training_like_from_unlike_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (2, 2048)) * 2
    labels = rng.integers(0, 2, 400)
    basis = rng.normal(0, 1, (20, 2048))  # features live near a 20-d subspace, like real ones
    train = centres[labels] + rng.normal(0, 1, (400, 20)) @ basis + rng.normal(0, 0.1, (400, 2048))
    vl = rng.integers(0, 2, 100)
    val = centres[vl] + rng.normal(0, 1, (100, 20)) @ basis + rng.normal(0, 0.1, (100, 2048))
    tensors, info = fit_ood(train, labels, val, n_classes=2, k=32, percentile=99)
    assert set(tensors) == {"ood.pca_mean", "ood.pca_components", "ood.class_means", "ood.precision",
                            "ood.residual_scale"}
    assert tensors["ood.pca_components"].shape == (32, 2048) and info["k"] == 32
    d_val = ood_distance(val, tensors)
    assert np.mean(d_val > info["threshold"]) <= 0.02
    unlike = rng.normal(0, 1, (50, 20)) @ rng.normal(0, 1, (20, 2048)) * 1.5  # another subspace
    assert np.mean(ood_distance(unlike, tensors) > info["threshold"]) > 0.9
    shifted = val + 6.0 * basis[0]  # 6 standard deviations along a direction inside the training subspace
    assert np.mean(ood_distance(shifted, tensors) > info["threshold"]) > 0.9
    # torch tensors with the model file's "extra." prefix work too; one vector gives one distance
    pref = {"extra." + k: torch.as_tensor(v) for k, v in tensors.items()}
    assert ood_distance(val[0], pref).shape == (1,)
    assert ood_distance(val[0], pref)[0] == pytest.approx(d_val[0], rel=1e-5)


def test_reserve_space_fails_on_a_full_disk_and_keeps_the_header(small_disk, monkeypatch):
    """The image cache's blocks are claimed before any write through the memory map: with posix_fallocate,
    and (where a system has none) by writing zeros after the .npy header, which must survive."""
    import errno
    import os

    import numpy as np

    from cxr_desktop.training.data import reserve_space

    disk = small_disk(256)
    big = np.lib.format.open_memmap(disk / "big.npy", mode="w+", dtype=np.float16, shape=(400, 64, 64))  # 3.2 MB
    with pytest.raises(OSError) as full:
        reserve_space(disk / "big.npy", big.offset)
    assert full.value.errno == errno.ENOSPC
    del big
    (disk / "big.npy").unlink()

    monkeypatch.delattr(os, "posix_fallocate")  # the portable path
    small = np.lib.format.open_memmap(disk / "small.npy", mode="w+", dtype=np.float16, shape=(3, 8, 8))
    reserve_space(disk / "small.npy", small.offset)
    small[:] = 1
    small.flush()
    del small
    assert np.load(disk / "small.npy").shape == (3, 8, 8)
    big = np.lib.format.open_memmap(disk / "big.npy", mode="w+", dtype=np.float16, shape=(400, 64, 64))
    with pytest.raises(OSError) as full:
        reserve_space(disk / "big.npy", big.offset)
    assert full.value.errno == errno.ENOSPC
