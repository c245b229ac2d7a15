"""Model files: round trip, atomic writes, refusals (pickle, damage, mismatch), conversion, ImageNet weights."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import re
import shutil
import socket
import struct
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save as st_save
from torch import nn

from cxr_desktop.errors import ModelFileError
from cxr_desktop.model import modelfile, weights
from cxr_desktop.model.architecture import build_classifier
from cxr_desktop.model.card import ModelCard, default_preprocessing
from cxr_desktop.model.checkpoint_convert import convert_checkpoint
from cxr_desktop.model.modelfile import (
    CARD_KEY,
    FORMAT_KEY,
    FORMAT_NAME,
    file_sha256,
    load_model,
    read_card,
    save_model,
)
from cxr_desktop.model.weights import find_imagenet_weights, init_model, load_imagenet_into

SIZE = 64  # small input: forward passes stay fast


# --------------------------------------------------------------------------- fixtures


class _NetworkTouched(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test here runs with the network (and torch hub downloads) wired to fail loudly."""
    def refuse(*args, **kwargs):
        raise _NetworkTouched(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """TORCH_HOME pointing at an empty folder; no CXR_WEIGHTS_DIR."""
    home = tmp_path / "torch-home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    return home


def _card(classes=("normal", "pneumonia"), **kw) -> ModelCard:
    return ModelCard(
        name="test-model", classes=list(classes), positive_class=classes[-1], version="3",
        input_size=SIZE, preprocessing=default_preprocessing(SIZE), decision_threshold=0.37,
        provenance={"source": "test"}, metrics={"auc": 0.9}, warnings=["a test model"], **kw,
    )


def _model(num_classes=2, seed=0, head=None):
    torch.manual_seed(seed)
    model = build_classifier(num_classes=num_classes, head=head)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a lost buffer changes the logits
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _x() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(42))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One fp32 model file (with extra tensors) shared by the read-only tests."""
    d = tmp_path_factory.mktemp("saved")
    model, card = _model(), _card()
    extras = {"feature_mean": torch.arange(2048, dtype=torch.float32), "count": torch.tensor([7])}
    path = d / "model.safetensors"
    sha = save_model(path, model, card, extra_tensors=extras)
    with torch.no_grad():
        logits = model(_x())
    return {"path": path, "sha": sha, "card": card, "logits": logits, "model": model,
            "extras": extras, "bytes": path.read_bytes()}


def _state(saved) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in saved["model"].state_dict().items()}


def _write(path: Path, tensors: dict, card: dict | str | None, fmt: str | None = FORMAT_NAME) -> Path:
    meta = {}
    if fmt is not None:
        meta[FORMAT_KEY] = fmt
    if card is not None:
        meta[CARD_KEY] = card if isinstance(card, str) else json.dumps(card)
    path.write_bytes(st_save(tensors, metadata=meta))
    return path


def _card_dict(saved, **changes) -> dict:
    d = json.loads(saved["card"].to_json())
    d.update(changes)
    return d


def _unstamped(card: ModelCard) -> ModelCard:
    """The card as given to save_model (which stores it with the tensors' sha256 added)."""
    return dataclasses.replace(card, tensors_sha256=None)


def _refused(path, *words, fn=load_model) -> str:
    with pytest.raises(ModelFileError) as info:
        fn(path)
    msg = str(info.value)
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------------- round trip


def test_round_trip_fp32_is_exact(saved):
    loaded = load_model(saved["path"])
    assert _unstamped(loaded.card) == saved["card"]
    assert loaded.card.tensors_sha256 and loaded.weights_status == "verified" and loaded.weights_verified
    assert not loaded.model.training
    assert all(p.dtype == torch.float32 for p in loaded.model.state_dict().values() if p.is_floating_point())
    with torch.no_grad():
        assert torch.equal(loaded.model(_x()), saved["logits"])
    assert loaded.sha256 == saved["sha"] == file_sha256(saved["path"])
    assert set(loaded.extra_tensors) == {"feature_mean", "count"}
    assert torch.equal(loaded.extra_tensors["feature_mean"], saved["extras"]["feature_mean"])
    assert loaded.extra_tensors["count"].dtype == torch.int64
    assert _unstamped(read_card(saved["path"])) == saved["card"]


def test_sha256_is_stable_across_saves(saved, tmp_path):
    again = save_model(tmp_path / "again.safetensors", saved["model"], saved["card"], extra_tensors=saved["extras"])
    assert again == saved["sha"]
    assert (tmp_path / "again.safetensors").read_bytes() == saved["bytes"]


def test_half_file_is_smaller_and_close(saved, tmp_path):
    path = tmp_path / "half.safetensors"
    sha = save_model(path, saved["model"], saved["card"], half=True)
    assert path.stat().st_size < 0.55 * saved["path"].stat().st_size
    loaded = load_model(path)
    assert loaded.sha256 == sha
    assert loaded.model.body.conv1.weight.dtype == torch.float32
    assert torch.equal(loaded.model.body.bn1.running_var, saved["model"].body.bn1.running_var.half().float())
    with torch.no_grad():
        got = loaded.model(_x())
    ref = saved["logits"]
    assert not torch.equal(got, ref)  # really went through fp16
    assert torch.allclose(got, ref, rtol=0.02, atol=0.02 * float(ref.abs().max()))


def test_save_refuses_card_that_does_not_fit_the_model(saved, tmp_path):
    with pytest.raises(ValueError, match="3 classes"):
        save_model(tmp_path / "x.safetensors", saved["model"], _card(classes=("a", "b", "c")))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- atomic write


def test_atomic_write_leaves_only_the_file(saved, tmp_path):
    save_model(tmp_path / "m.safetensors", saved["model"], saved["card"])
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_interrupted_write_keeps_old_file(saved, tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    shutil.copyfile(saved["path"], path)

    def crash(fh, chunks):
        for i, chunk in enumerate(chunks):
            fh.write(chunk)
            if i == 3:
                raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile, "_write_chunks", crash)
    new_card = _card()
    new_card.version = "4"
    with pytest.raises(OSError, match="No space"):
        save_model(path, saved["model"], new_card)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert file_sha256(path) == saved["sha"]
    assert read_card(path).version == "3"


# --------------------------------------------------------------------------- pickle files are never opened


class _Evil:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _evil_files(tmp_path: Path, sentinel: Path) -> list[Path]:
    zip_pt = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil(sentinel)}, zip_pt)
    legacy = tmp_path / "evil-legacy.pth"
    torch.save({"payload": _Evil(sentinel)}, legacy, _use_new_zipfile_serialization=False)
    raw = tmp_path / "evil.ckpt"
    raw.write_bytes(pickle.dumps(_Evil(sentinel), protocol=2))
    disguised = tmp_path / "looks-fine.safetensors"
    shutil.copyfile(zip_pt, disguised)
    return [zip_pt, legacy, raw, disguised]


def test_payload_is_live(tmp_path):
    """Control: the crafted pickle really does create its sentinel when unpickled."""
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Evil(control), protocol=2)).close()
    assert control.exists()


@pytest.mark.parametrize("fn", [load_model, read_card], ids=["load_model", "read_card"])
def test_pickle_checkpoints_are_refused_without_running_code(tmp_path, fn):
    sentinel = tmp_path / "pwned"
    files = _evil_files(tmp_path, sentinel)
    assert files[0].read_bytes()[:4] == b"PK\x03\x04" and files[1].read_bytes()[0] == 0x80
    for f in files:
        msg = _refused(f, "pickle", "execute code", "cxr-model convert", fn=fn)
        assert f.name in msg
    assert not sentinel.exists()


def test_convert_refuses_malicious_pickle(tmp_path):
    sentinel = tmp_path / "pwned"
    for f in _evil_files(tmp_path, sentinel)[:3]:
        with pytest.raises(ModelFileError, match="pickle") as info:
            convert_checkpoint(f, tmp_path / "out.safetensors", classes=["a", "b"])
        assert "refused" in str(info.value) and "objects other than tensors" in str(info.value)
    assert not sentinel.exists()
    assert not (tmp_path / "out.safetensors").exists()


# --------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("cut", ["5", "8", "9", "100", "data_start", "half", "minus1"])
def test_truncated_files_are_refused(saved, tmp_path, cut):
    data = saved["bytes"]
    (n,) = struct.unpack("<Q", data[:8])
    offset = {"data_start": 8 + n, "half": len(data) // 2, "minus1": len(data) - 1}.get(cut) or int(cut)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:offset])
    _refused(path, "truncated")
    _refused(path, "truncated", fn=read_card)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _refused(path, "empty")


def test_missing_file_and_folder(tmp_path):
    _refused(tmp_path / "nope.safetensors", "does not exist")
    _refused(tmp_path, "folder")


@pytest.mark.parametrize("garbage", [b"\xff\xfe\xfd", b"]]]]"], ids=["bad-utf8", "bad-json"])
def test_corrupt_header_json(saved, tmp_path, garbage):
    data = bytearray(saved["bytes"])
    data[9:9 + len(garbage)] = garbage  # just after the header's opening brace
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(bytes(data))
    _refused(path, "header", "corrupt", "not valid JSON")
    _refused(path, "header", "corrupt", fn=read_card)


def test_random_bytes(tmp_path):
    path = tmp_path / "random.safetensors"
    rng = random.Random(1)
    path.write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    msg = _refused(path)
    assert "not a CXR Review model file" in msg or "truncated" in msg


def test_data_offsets_out_of_range(tmp_path):
    body = st_save({"x": torch.zeros(4)}, metadata={CARD_KEY: "{}"})
    (n,) = struct.unpack("<Q", body[:8])
    header = json.loads(body[8:8 + n])
    header["x"]["data_offsets"] = [0, 1_000_000]
    header["x"]["shape"] = [250_000]
    raw = json.dumps(header).encode()
    path = tmp_path / "oor.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body[8 + n:])
    _refused(path, "data out of range")


def test_safetensors_without_card(tmp_path):
    path = _write(tmp_path / "plain.safetensors", {"conv1.weight": torch.zeros(64, 3, 7, 7)}, None, fmt="pt")
    _refused(path, "not a CXR Review model", "no model card", "cxr-model convert")
    _refused(path, "no model card", fn=read_card)


def test_card_missing_a_field(saved, tmp_path):
    card = _card_dict(saved)
    del card["classes"]
    path = _write(tmp_path / "m.safetensors", {"x": torch.zeros(1)}, card)
    _refused(path, "missing required fields", "classes", fn=read_card)
    _refused(path, "missing required fields", "classes")


def test_card_field_of_wrong_type(saved, tmp_path):
    path = _write(tmp_path / "m.safetensors", {"x": torch.zeros(1)}, _card_dict(saved, classes=["a", 3]))
    _refused(path, "class name", fn=read_card)
    path = _write(tmp_path / "n.safetensors", {"x": torch.zeros(1)}, _card_dict(saved, decision_threshold="high"))
    _refused(path, "'decision_threshold'", "a number from 0 to 1", '"high"', fn=read_card)


def test_card_json_not_parseable(tmp_path):
    path = _write(tmp_path / "m.safetensors", {"x": torch.zeros(1)}, "{not json")
    _refused(path, "not valid JSON", fn=read_card)


def test_wrong_tensor_shape(saved, tmp_path):
    state = _state(saved)
    state["body.layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    path = _write(tmp_path / "m.safetensors", state, _card_dict(saved))
    _refused(path, "wrong shape", "body.layer1.0.conv1.weight", "[64, 64, 3, 3]")


@pytest.mark.parametrize("card_classes", [["a", "b", "c"], ["a", "b", "c", "d"]])
def test_card_classes_do_not_match_head(saved, tmp_path, card_classes):
    path = _write(tmp_path / "m.safetensors", _state(saved), _card_dict(saved, classes=card_classes, positive_class="a"))
    _refused(path, f"{len(card_classes)} classes", "has 2 outputs", "do not belong together")


def test_head_has_more_outputs_than_card_classes(saved, tmp_path):
    state = _state(saved)
    state["head.layers.1.weight"] = torch.zeros(3, 2048)
    state["head.layers.1.bias"] = torch.zeros(3)
    path = _write(tmp_path / "m.safetensors", state, _card_dict(saved))
    _refused(path, "2 classes", "has 3 outputs")


def test_missing_and_unexpected_keys(saved, tmp_path):
    state = _state(saved)
    del state["body.layer4.2.bn3.weight"]
    path = _write(tmp_path / "m.safetensors", state, _card_dict(saved))
    _refused(path, "1 missing", "body.layer4.2.bn3.weight")
    state = _state(saved)
    state["body.mystery.weight"] = torch.zeros(3)
    path = _write(tmp_path / "n.safetensors", state, _card_dict(saved))
    _refused(path, "1 unexpected", "body.mystery.weight")


def test_nan_and_inf_weights(saved, tmp_path):
    state = _state(saved)
    state["body.layer2.0.conv2.weight"][0, 0, 0, 0] = float("nan")
    state["head.layers.1.bias"][1] = float("inf")
    path = _write(tmp_path / "m.safetensors", state, _card_dict(saved))
    _refused(path, "NaN", "2 tensors", "diverged")
    assert read_card(path).name == "test-model"  # header only: the weights are not read


def test_foreign_format_tag(saved, tmp_path):
    path = _write(tmp_path / "m.safetensors", {"x": torch.zeros(1)}, _card_dict(saved), fmt="something-else")
    _refused(path, "something-else", fn=read_card)


# --------------------------------------------------------------------------- conversion


def _torchvision_net(num_classes: int, seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    net = torchvision.models.resnet50(weights=None)
    net.fc = nn.Linear(2048, num_classes)
    return net.eval()


def test_convert_torchvision_state_dict(tmp_path, monkeypatch):
    net = _torchvision_net(2)
    src = tmp_path / "research.pt"
    torch.save(net.state_dict(), src)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    res = convert_checkpoint(src, tmp_path / "m.safetensors", classes=["normal", "pneumonia"], name="research")
    assert calls and all(c.get("weights_only") is True for c in calls)
    assert res.head_converted and res.dropped_keys == ()
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.sha256 == res.sha256
    with torch.no_grad():
        assert torch.allclose(loaded.model(_x()), net(_x()), atol=1e-5, rtol=1e-5)
    card = loaded.card
    assert card.provenance["note"] == "converted from research.pt"
    assert card.provenance["source_sha256"] == file_sha256(src)
    assert card.metrics == {} and card.decision_threshold == 0.5
    assert any("threshold" in w and "unknown" in w for w in card.warnings)


def test_convert_refuses_class_count_mismatch(tmp_path):
    src = tmp_path / "three.pt"
    torch.save(_torchvision_net(3).state_dict(), src)
    with pytest.raises(ModelFileError, match="3 outputs but 2 classes"):
        convert_checkpoint(src, tmp_path / "m.safetensors", classes=["a", "b"])
    assert not (tmp_path / "m.safetensors").exists()


def test_convert_refuses_non_resnet(tmp_path):
    src = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3), "fc.weight": torch.zeros(2, 3)}, src)
    with pytest.raises(ModelFileError, match="not a ResNet50"):
        convert_checkpoint(src, tmp_path / "m.safetensors", classes=["a", "b"])


def test_convert_refuses_an_existing_model_file(saved, tmp_path):
    with pytest.raises(ModelFileError, match="already a CXR Review model"):
        convert_checkpoint(saved["path"], tmp_path / "m.safetensors", classes=["a", "b"])


# --------------------------------------------------------------------------- ImageNet weights


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A torchvision ResNet50 state dict (random weights) named like torchvision's cached files."""
    home = tmp_path_factory.mktemp("torch-home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(11)
    state = torchvision.models.resnet50(weights=None).state_dict()
    tmp = ckpt / "download.partial"
    torch.save(state, tmp)
    sha = file_sha256(tmp)
    path = ckpt / f"resnet50-{sha[:8]}.pth"
    tmp.rename(path)
    return {"home": home, "path": path, "sha": sha, "state": state}


def test_init_model_uses_cached_imagenet_file(standin, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(standin["home"]))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    assert find_imagenet_weights() == standin["path"]
    model, card = init_model(classes=["normal", "pneumonia"], seed=0)
    assert torch.equal(model.body.conv1.weight, standin["state"]["conv1.weight"])
    assert torch.equal(model.body.layer4[2].bn3.running_var, standin["state"]["layer4.2.bn3.running_var"])
    record = card.provenance["initial_weights"]
    assert record["verified"] is True and record["sha256"] == standin["sha"]
    assert record["source"] == "imagenet" and record["ignored_keys"] == ["fc.bias", "fc.weight"]
    assert card.decision_threshold == 0.5 and card.metrics == {}
    assert any("untrained" in w.lower() for w in card.warnings)
    assert not any("not found" in w for w in card.warnings)
    assert set(card.provenance["software"]) == {"torch", "torchvision", "cxr_desktop", "python"}
    assert card.provenance["created"].endswith("+00:00")


def test_weights_dir_env_is_searched(standin, empty_home, monkeypatch, tmp_path):
    admin = tmp_path / "admin"
    admin.mkdir()
    os.symlink(standin["path"], admin / standin["path"].name)
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(admin))
    assert find_imagenet_weights() == admin / standin["path"].name


def test_cached_file_with_wrong_checksum_is_refused(standin, empty_home):
    ckpt = empty_home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    os.symlink(standin["path"], ckpt / "resnet50-11ad3fa6.pth")  # torchvision's real name, other content
    with pytest.raises(ModelFileError, match="starts with 11ad3fa6") as info:
        init_model(classes=["a", "b"])
    assert "damaged" in str(info.value)


def test_explicit_path_checksums(standin, tmp_path):
    model = build_classifier(num_classes=2)
    plain = tmp_path / "my-weights.pth"  # no hash in the name
    os.symlink(standin["path"], plain)
    rec = load_imagenet_into(model, plain)
    assert rec.verified is False and "unverified" in rec.warning and rec.source == "file"
    rec = load_imagenet_into(model, plain, expected_sha256=standin["sha"].upper())
    assert rec.verified is True and rec.warning is None
    assert torch.equal(model.body.layer1[0].conv1.weight, standin["state"]["layer1.0.conv1.weight"])
    with pytest.raises(ModelFileError, match="does not match the expected"):
        load_imagenet_into(model, plain, expected_sha256="0" * 64)
    renamed = tmp_path / "resnet50-deadbeef.pth"
    os.symlink(standin["path"], renamed)
    with pytest.raises(ModelFileError, match="deadbeef"):
        load_imagenet_into(model, renamed)


def test_weights_that_are_not_resnet50_are_refused(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ModelFileError, match="wrong shape|missing"):
        load_imagenet_into(build_classifier(num_classes=2), path, expected_sha256=file_sha256(path))


def test_no_weights_found_gives_random_init_with_warning(empty_home):
    model, card = init_model(classes=["normal", "pneumonia"], positive_class="pneumonia", seed=0)
    assert card.provenance["initial_weights"]["source"] == "random"
    warning = next(w for w in card.warnings if "not found offline" in w)
    assert "ImageNet weights were not found offline" in warning and "random weights" in warning
    assert str(empty_home / "hub" / "checkpoints") in warning
    # seeded: the same seed gives the same random model
    again, _ = init_model(classes=["normal", "pneumonia"], weights="none", seed=0)
    assert torch.equal(model.body.conv1.weight, again.body.conv1.weight)


def test_init_model_card_round_trips(empty_home, tmp_path):
    model, card = init_model(classes=["a", "b", "c"], weights="none", head="mlp", input_size=96, name="n", seed=1)
    assert card.head == {"type": "gap_mlp", "hidden": [256], "dropout": 0.5}
    assert any("random weights" in w for w in card.warnings)
    sha = save_model(tmp_path / "n.safetensors", model, card, half=True)
    assert _unstamped(read_card(tmp_path / "n.safetensors")) == card
    assert load_model(tmp_path / "n.safetensors").sha256 == sha


def test_no_network_guard_is_armed():
    with pytest.raises(_NetworkTouched):
        torch.hub.load_state_dict_from_url("https://download.pytorch.org/models/resnet50-11ad3fa6.pth")
    with pytest.raises(_NetworkTouched):
        socket.create_connection(("download.pytorch.org", 443))


# --------------------------------------------------------------------------- card fields (issue 16.5)


def _pre(saved, **changes) -> dict:
    pre = dict(saved["card"].preprocessing)
    pre.update(changes)
    return pre


HOSTILE_CARDS = {
    # name: (changes to the card dict, words the refusal must contain)
    "std 0": (lambda s: {"preprocessing": _pre(s, std=[0, 0, 0])}, ["'preprocessing.std'", ">= 0.001", "[0, 0, 0]"]),
    "std negative": (lambda s: {"preprocessing": _pre(s, std=[0.2, -0.2, 0.2])}, ["'preprocessing.std'"]),
    "std NaN": (lambda s: {"preprocessing": _pre(s, std=[float("nan")] * 3)}, ["'preprocessing.std'", "finite"]),
    "means as strings": (lambda s: {"preprocessing": _pre(s, mean=["0.485", "0.456", "0.406"])},
                         ["'preprocessing.mean'", "3 finite numbers", '"0.485"']),
    "two means": (lambda s: {"preprocessing": _pre(s, mean=[0.5, 0.5])}, ["'preprocessing.mean'"]),
    "input size 32": (lambda s: {"input_size": 32}, ["'input_size'", "64 to 1024", "multiple of 32", "found 32"]),
    "input size 100000": (lambda s: {"input_size": 100000}, ["'input_size'", "found 100000"]),
    "input size 100": (lambda s: {"input_size": 100}, ["'input_size'", "multiple of 32"]),
    "input size text": (lambda s: {"input_size": "64"}, ["'input_size'", '"64"']),
    "input size true": (lambda s: {"input_size": True}, ["'input_size'"]),
    "preprocessing size differs": (lambda s: {"preprocessing": _pre(s, input_size=96)},
                                   ["'preprocessing.input_size'", "(64)"]),
    "format_version null": (lambda s: {"format_version": None}, ["'format_version'", "found null"]),
    "format_version abc": (lambda s: {"format_version": "abc"}, ["'format_version'", '"abc"']),
    "format_version 0": (lambda s: {"format_version": 0}, ["'format_version'"]),
    "format_version newer": (lambda s: {"format_version": 99}, ["card format 99", "Update CXR Review"]),
    "threshold above 1": (lambda s: {"decision_threshold": 1.5}, ["'decision_threshold'", "0 to 1"]),
    "threshold NaN": (lambda s: {"decision_threshold": float("nan")}, ["'decision_threshold'"]),
    "no classes": (lambda s: {"classes": []}, ["'classes'", "2 to"]),
    "class twice": (lambda s: {"classes": ["normal", "normal"], "positive_class": None}, ["listed twice"]),
    "blank class": (lambda s: {"classes": ["normal", " "]}, ["'classes[1]'", "class name"]),
    "too many classes": (lambda s: {"classes": [f"c{i}" for i in range(101)], "positive_class": None},
                         ["'classes'", "2 to 100"]),
    "positive class unknown": (lambda s: {"positive_class": "tb"}, ["positive class", "normal, pneumonia"]),
    "preprocessing unknown": (lambda s: {"preprocessing": _pre(s, id="something-else")},
                              ["'preprocessing.id'", "cxr-grey-window-stretch"]),
    "head type unknown": (lambda s: {"head": {"type": "transformer"}}, ["'head.type'"]),
    "head hidden huge": (lambda s: {"head": {"type": "gap_mlp", "hidden": [10**9], "dropout": 0.5}},
                         ["'head.hidden'", "8192"]),
    "head dropout 1": (lambda s: {"head": {"type": "gap_dropout_linear", "dropout": 1.0}}, ["'head.dropout'"]),
    "architecture": (lambda s: {"architecture": "vit"}, ["'architecture'", "resnet50"]),
    "metrics not an object": (lambda s: {"metrics": [1, 2]}, ["'metrics'", "JSON object"]),
    "warnings not texts": (lambda s: {"warnings": [1]}, ["'warnings'"]),
    "demonstration text": (lambda s: {"demonstration": "yes"}, ["'demonstration'", "true or false"]),
    "extra not an object": (lambda s: {"extra": "x"}, ["'extra'"]),
    "ood threshold text": (lambda s: {"extra": {"ood": {"threshold": "10", "k": 8}}},
                           ["'extra.ood.threshold'", "a number"]),
    "ood k zero": (lambda s: {"extra": {"ood": {"threshold": 3.0, "k": 0}}}, ["'extra.ood.k'"]),
    "parent sha256 bad": (lambda s: {"parent": {"name": "p", "version": "1", "sha256": "xyz"}},
                          ["'parent.sha256'", "64"]),
    "parent not an object": (lambda s: {"parent": "demo"}, ["'parent'", "JSON object"]),
    "lineage not a list": (lambda s: {"provenance": {"lineage": "demo"}}, ["'provenance.lineage'"]),
    "tensors_sha256 bad": (lambda s: {"tensors_sha256": "abc"}, ["'tensors_sha256'", "64"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CARDS))
def test_hostile_card_fields_are_refused_naming_the_field(saved, tmp_path, case):
    changes, words = HOSTILE_CARDS[case]
    card = _card_dict(saved, **changes(saved))
    path = _write(tmp_path / "m.safetensors", {"x": torch.zeros(1)}, card)
    _refused(path, *words, fn=read_card)


@pytest.mark.parametrize("case", ["std 0", "means as strings", "input size 32", "input size 100000",
                                  "format_version null", "format_version abc"])
def test_hostile_card_with_real_weights_is_refused_by_the_loader(saved, tmp_path, case):
    """The issue's cases, in a file whose weights are fine: load_model (engine, screening, GUI) refuses."""
    changes, words = HOSTILE_CARDS[case]
    path = _write(tmp_path / "m.safetensors", _state(saved), _card_dict(saved, **changes(saved)))
    _refused(path, *words)


def test_lenient_for_unknown_fields_and_extra_keys(saved, tmp_path):
    card = _card_dict(saved, future_field={"a": 1}, extra={"ood": {"threshold": 3.0, "k": 8, "new": [1]},
                                                           "calibration": {"anything": [1, 2]}},
                      parent={"name": "p", "version": "2", "sha256": "ab" * 32},
                      provenance={"lineage": [{"name": "p", "version": "2", "sha256": "ab" * 32,
                                               "demonstration": True}, {"name": "", "version": "", "sha256": ""}]})
    path = _write(tmp_path / "m.safetensors", _state(saved), card)
    loaded = load_model(path)
    assert loaded.card.extra["calibration"] == {"anything": [1, 2]} and loaded.card.parent["version"] == "2"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_card_is_refused_not_a_recursion_error(saved, tmp_path):
    plain = '"provenance": {"source": "test"}'
    text = saved["card"].to_json().replace(plain, f'"provenance": {{"x": {_nested(100_000)}}}')
    assert len(text) > 200_000
    path = _write(tmp_path / "m.safetensors", {"x": torch.zeros(1)}, text)
    for fn in (read_card, load_model):
        _refused(path, "model card", "nested", "levels deep", fn=fn)
    ok = saved["card"].to_json().replace(plain, f'"provenance": {{"x": {_nested(10)}}}')
    card = read_card(_write(tmp_path / "ok.safetensors", {"x": torch.zeros(1)}, ok))
    assert card.provenance["x"] == json.loads(_nested(10))


def test_deeply_nested_header_is_refused(tmp_path):
    body = st_save({"x": torch.zeros(4)})
    (n,) = struct.unpack("<Q", body[:8])
    raw = body[8:8 + n].rstrip().decode()
    raw = raw[:-1] + f',"deep":{_nested(200_000)}}}'
    raw_b = raw.encode() + b" " * (-len(raw) % 8)
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw_b)) + raw_b + body[8 + n:])
    for fn in (read_card, load_model):
        _refused(path, "header", "nested", fn=fn)


def test_header_length_beyond_limit_or_too_small(tmp_path):
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", modelfile.MAX_HEADER_BYTES + 8) + b"{" + b" " * 100)
    _refused(path, "header claims", "more than")
    path.write_bytes(struct.pack("<Q", 0) + b"{" + b"x" * 100)  # n = 0 once meant "read the rest"
    _refused(path, "truncated or corrupt")


# --------------------------------------------------------------------------- files that never end (16.3)


def _finishes(fn, *args, seconds: float = 20.0):
    """Run fn(*args) in a daemon thread; the call must end (return or raise) in time."""
    import threading

    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} did not return within {seconds} s"
    return box


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_fifo_and_link_to_fifo_are_refused_without_blocking(tmp_path, saved):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    link = tmp_path / "model.safetensors"
    link.symlink_to(fifo)
    for path in (fifo, link):
        for fn in (load_model, read_card, file_sha256):
            box = _finishes(fn, path)
            assert isinstance(box.get("error"), ModelFileError), box
            assert "named pipe (FIFO)" in str(box["error"]) and "regular files" in str(box["error"])
        box = _finishes(lambda p: convert_checkpoint(p, tmp_path / "out.safetensors", classes=["a", "b"]), path)
        assert isinstance(box.get("error"), ModelFileError) and "FIFO" in str(box["error"])


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_and_link_to_it_are_refused(tmp_path):
    link = tmp_path / "zero.safetensors"
    link.symlink_to("/dev/zero")
    for path in (Path("/dev/zero"), link):
        for fn in (load_model, read_card):
            box = _finishes(fn, path)
            assert isinstance(box.get("error"), ModelFileError), box
            assert "character device" in str(box["error"])


def test_fifo_swapped_in_after_the_path_check_does_not_block(tmp_path, monkeypatch):
    """The open itself is non-blocking and checked on the descriptor (no check-then-open race)."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("named pipes are POSIX")
    fifo = tmp_path / "swapped.safetensors"
    os.mkfifo(fifo)
    monkeypatch.setattr(modelfile, "check_path", lambda p: Path(p))  # as if it was a regular file a moment ago
    box = _finishes(load_model, fifo)
    assert isinstance(box.get("error"), ModelFileError) and "FIFO" in str(box["error"])


# --------------------------------------------------------------------------- weights checksum (16.6)


def _flip_bit(path: Path, tensor: str, out: Path, byte: int = 0, bit: int = 3) -> Path:
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    begin, _ = json.loads(raw[8:8 + n])[tensor]["data_offsets"]
    raw[8 + n + begin + byte] ^= 1 << bit
    out.write_bytes(bytes(raw))
    return out


def _strip_checksum(path: Path, out: Path) -> Path:
    """The same file as a version without weights checksums wrote it."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    card = json.loads(header["__metadata__"][CARD_KEY])
    del card["tensors_sha256"]
    header["__metadata__"][CARD_KEY] = json.dumps(card)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    out.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    return out


def test_saved_card_carries_the_tensors_digest(saved):
    card = read_card(saved["path"])
    assert re.fullmatch(r"[0-9a-f]{64}", card.tensors_sha256)
    assert saved["card"].tensors_sha256 is None  # the caller's card is not changed


@pytest.mark.parametrize("tensor", ["head.layers.1.weight", "body.layer4.2.bn3.running_var", "extra.feature_mean"])
def test_one_flipped_bit_in_a_tensor_is_refused(saved, tmp_path, tensor):
    damaged = _flip_bit(saved["path"], tensor, tmp_path / "flipped.safetensors")
    assert damaged.read_bytes() != saved["bytes"]
    msg = _refused(damaged, "weights damaged", "checksum mismatch", "flipped.safetensors")
    assert read_card(damaged).tensors_sha256 in msg or "stored" in msg


def test_file_without_checksum_loads_as_not_verified(saved, tmp_path):
    old = _strip_checksum(saved["path"], tmp_path / "old.safetensors")
    loaded = load_model(old)
    assert loaded.weights_status == modelfile.WEIGHTS_NO_CHECKSUM == "not verified (no checksum stored)"
    assert not loaded.weights_verified
    with torch.no_grad():
        assert torch.equal(loaded.model(_x()), saved["logits"])


def test_adding_the_checksum_keeps_every_tensor_byte_for_byte(saved, tmp_path):
    from safetensors.torch import load_file

    half = tmp_path / "half.safetensors"
    save_model(half, saved["model"], saved["card"], half=True,
               extra_tensors={"stats": torch.arange(5, dtype=torch.float64)})
    old = _strip_checksum(half, tmp_path / "old.safetensors")
    before = load_file(old)
    res = modelfile.add_tensors_checksum(old, tmp_path / "new.safetensors")
    assert not res.already and res.tensors_sha256 == read_card(half).tensors_sha256
    after = load_file(tmp_path / "new.safetensors")
    assert set(after) == set(before)
    for k in before:
        assert after[k].dtype == before[k].dtype and torch.equal(after[k], before[k]), k
    loaded = load_model(tmp_path / "new.safetensors")
    assert loaded.weights_verified and _unstamped(loaded.card) == _unstamped(load_model(old).card)
    in_place = modelfile.add_tensors_checksum(old)  # no destination: the file itself, atomically
    assert in_place.path == str(old) and load_model(old).weights_verified
    assert (tmp_path / "new.safetensors").read_bytes() == old.read_bytes()


def test_adding_the_checksum_refuses_a_damaged_file(saved, tmp_path):
    damaged = _flip_bit(saved["path"], "head.layers.1.bias", tmp_path / "d.safetensors")
    before = damaged.read_bytes()
    _refused(damaged, "checksum mismatch", fn=modelfile.add_tensors_checksum)
    assert damaged.read_bytes() == before


def test_checksum_command(saved, tmp_path, capsys):
    from cxr_desktop.cli.model_checksum import main as checksum_main

    old = _strip_checksum(saved["path"], tmp_path / "old.safetensors")
    out = tmp_path / "new.safetensors"
    assert checksum_main([str(old), "--out", str(out)]) == 0
    assert "weights verified" in capsys.readouterr().out and load_model(out).weights_verified
    assert checksum_main([str(old), "--out", str(out)]) == 2  # exists: --force needed
    assert "--force" in capsys.readouterr().err
    damaged = _flip_bit(saved["path"], "head.layers.1.bias", tmp_path / "d.safetensors")
    assert checksum_main([str(damaged)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
