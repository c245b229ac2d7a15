"""``cxr-model`` command line: init, info (text and JSON), convert, refusals and exit codes."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torchvision
from torch import nn

from cxr_desktop.cli.model import main
from cxr_desktop.model.modelfile import file_sha256, load_model


@pytest.fixture(autouse=True)
def offline_home(tmp_path, monkeypatch):
    """An empty torch hub cache, so results never depend on this machine's cache; downloads fail loudly."""
    home = tmp_path / "torch-home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "user"))  # the user data weights folder is searched too
    monkeypatch.delenv("CXR_WEIGHTS_DIR", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    return home


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "demo.safetensors"
    code = main(["init", "--classes", "normal,pneumonia", "--out", str(path), "--weights", "none",
                 "--name", "demo", "--seed", "0"])
    assert code == 0
    return path


def test_init_then_info(model_file, capsys):
    assert main(["info", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "Classes:         normal, pneumonia" in out
    assert "Positive class:  pneumonia (index 1)" in out
    assert "demo v0" in out and "Input size:      224 x 224" in out
    assert file_sha256(model_file) in out
    assert "random weights" in out  # the card's warning is shown
    assert "Threshold:       0.5" in out


def test_info_shows_lineage_and_inherited_warnings(model_file, tmp_path, capsys):
    """A model made from another model file names its parent (with the file's sha256) and inherits."""
    child = tmp_path / "child.safetensors"
    assert main(["init", "--classes", "normal,pneumonia", "--out", str(child), "--weights", str(model_file),
                 "--name", "child"]) == 0
    capsys.readouterr()
    assert main(["info", str(child)]) == 0
    out = capsys.readouterr().out
    assert f"Lineage:         Trained from 'demo v0' (sha256 {file_sha256(model_file)[:16]}...)" in out
    assert "Inherited from 'demo v0': No ImageNet initialisation was requested" in out
    assert main(["info", str(model_file)]) == 0
    assert "Lineage:         none recorded" in capsys.readouterr().out
    assert main(["info", str(child), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["card"]["parent"] == {"name": "demo", "version": "0", "sha256": file_sha256(model_file)}


def test_info_json(model_file, capsys):
    assert main(["info", str(model_file), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["card"]["classes"] == ["normal", "pneumonia"]
    assert doc["card"]["name"] == "demo"
    assert doc["sha256"] == file_sha256(model_file)
    assert doc["card"]["provenance"]["initial_weights"]["source"] == "random"


def test_init_options(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    code = main(["init", "--classes", "a, b ,c", "--out", str(out), "--positive", "a", "--head", "mlp",
                 "--input-size", "96", "--half"])
    assert code == 0
    streams = capsys.readouterr()
    assert f"Wrote {out}" in streams.out
    assert "ImageNet weights were not found offline" in streams.err  # empty cache: warned, not failed
    card = load_model(out).card
    assert card.classes == ["a", "b", "c"] and card.positive_class == "a"
    assert card.head["type"] == "gap_mlp" and card.input_size == 96
    assert out.stat().st_size < 60_000_000  # fp16


def test_refused_file_exits_2_with_reason(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps({"w": [1, 2, 3]}, protocol=2))
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "model.pt" in err and "pickle" in err and "cxr-model convert" in err
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    trunc = tmp_path / "cut.safetensors"
    trunc.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    assert main(["info", str(trunc), "--json"]) == 2
    captured = capsys.readouterr()
    assert "truncated" in captured.err and captured.out == ""


@pytest.mark.parametrize("argv", [
    [],
    ["info"],
    ["init", "--classes", "onlyone", "--out", "x.safetensors"],
    ["init", "--classes", "a,b"],
    ["frobnicate"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_existing_output_needs_force(model_file, tmp_path, capsys):
    before = file_sha256(model_file)
    assert main(["init", "--classes", "a,b", "--out", str(model_file), "--weights", "none"]) == 2
    assert "--force" in capsys.readouterr().err
    assert file_sha256(model_file) == before


def test_bad_positive_class_exits_2(tmp_path, capsys):
    assert main(["init", "--classes", "a,b", "--positive", "z", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "positive class" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_convert_wrapped_dataparallel_checkpoint(tmp_path, capsys):
    torch.manual_seed(5)
    net = torchvision.models.resnet50(weights=None)
    net.fc = nn.Linear(2048, 2)
    src = tmp_path / "best.ckpt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, src)
    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(src), "--classes", "normal,effusion", "--out", str(out), "--name", "research"]) == 0
    streams = capsys.readouterr()
    assert "threshold" in streams.err and "unknown" in streams.err
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "converted from best.ckpt" in info and "normal, effusion" in info
    loaded = load_model(out)
    assert torch.equal(loaded.model.head.layers[1].weight, net.fc.weight.detach())
    assert torch.equal(loaded.model.body.layer3[0].conv2.weight, net.layer3[0].conv2.weight.detach())


def test_convert_malicious_checkpoint_exits_2(tmp_path, capsys):
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    src = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, src)
    assert main(["convert", str(src), "--classes", "a,b", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "pickle" in capsys.readouterr().err
    assert not sentinel.exists()


# --------------------------------------------------------------------------- hostile model files (issue 16.5, 16.6)


def _edit_card(src, out, edit):
    """A copy of ``src`` whose card is changed by ``edit(card_dict)`` (tensor bytes untouched)."""
    import struct

    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    card = json.loads(header["__metadata__"]["cxr_card"])
    edit(card)
    header["__metadata__"]["cxr_card"] = json.dumps(card)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    out.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    return out


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["preprocessing"].update(std=[0, 0, 0]), ["preprocessing.std"]),
    (lambda c: c["preprocessing"].update(mean=["0.5", "0.5", "0.5"]), ["preprocessing.mean"]),
    (lambda c: c.update(input_size=32), ["input_size", "multiple of 32"]),
    (lambda c: c.update(input_size=100000), ["input_size", "100000"]),
    (lambda c: c.update(format_version=None), ["format_version", "null"]),
    (lambda c: c.update(format_version="abc"), ["format_version", '"abc"']),
    (lambda c: c.update(provenance={"deep": json.loads("[" * 500 + "]" * 500)}), ["nested", "levels deep"]),
], ids=["std0", "means-strings", "size32", "size100000", "version-null", "version-abc", "deep"])
def test_info_refuses_hostile_cards_without_a_traceback(model_file, tmp_path, capsys, edit, words):
    bad = _edit_card(model_file, tmp_path / "bad.safetensors", edit)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxr-model: refused: bad.safetensors:") and "Traceback" not in err
    for w in words:
        assert w in err


def test_info_says_verified_only_when_the_checksum_matches(model_file, tmp_path, capsys):
    import struct

    assert main(["info", str(model_file)]) == 0
    assert "Weights:         verified" in capsys.readouterr().out
    assert main(["info", "--json", str(model_file)]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == "verified"

    old = _edit_card(model_file, tmp_path / "old.safetensors", lambda c: c.pop("tensors_sha256"))
    assert main(["info", str(old)]) == 0
    assert "Weights:         not verified (no checksum stored)" in capsys.readouterr().out

    raw = bytearray(model_file.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    begin, _ = json.loads(raw[8:8 + n])["head.layers.1.weight"]["data_offsets"]
    raw[8 + n + begin + 2] ^= 0x10  # one bit in the head
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(raw))
    assert main(["info", str(flipped)]) == 2
    captured = capsys.readouterr()
    assert "Weights damaged: checksum mismatch" in captured.err and "verified" not in captured.out


def test_failure_exit_maps_expected_failures_and_raises_the_rest():
    import io

    from cxr_desktop.cli.model import EXIT_IO, EXIT_REFUSED, failure_exit
    from cxr_desktop.errors import ModelFileError
    from cxr_desktop.model.weights_download import ChecksumError, WeightsDownloadError

    cases = [(ChecksumError("wrong sha256"), EXIT_REFUSED, "cxr-model: refused: wrong sha256"),
             (WeightsDownloadError("server gone"), EXIT_IO, "cxr-model: failed: server gone"),
             (ModelFileError("not a model"), EXIT_REFUSED, "cxr-model: refused: not a model"),
             (ValueError("bad --classes"), EXIT_REFUSED, "cxr-model: error: bad --classes"),
             (PermissionError("read-only folder"), EXIT_IO, "cxr-model: could not write: read-only folder")]
    for exc, code, line in cases:
        err = io.StringIO()
        assert failure_exit(exc, err) == code
        assert err.getvalue().strip() == line
    with pytest.raises(RuntimeError, match="a bug"):
        failure_exit(RuntimeError("a bug"), io.StringIO())
