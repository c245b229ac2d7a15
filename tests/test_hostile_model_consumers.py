"""A model file with a hostile card or damaged weights reaches every consumer as a ModelFileError:
the inference engine and cxr-screen refuse it with the reason (no traceback, no scored row)."""

from __future__ import annotations

import io
import json
import struct

import pytest

from cxr_desktop.errors import ModelFileError
from cxr_desktop.model.modelfile import CARD_KEY, save_model
from cxr_desktop.model.weights import init_model


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("consumers") / "good.safetensors"
    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                             input_size=64, name="consumer-test", seed=0)
    save_model(path, model, card)
    return path


def _rewrite(src, out, *, card_edit=None, flip_in=None):
    raw = bytearray(src.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    if flip_in is not None:
        begin, _ = header[flip_in]["data_offsets"]
        raw[8 + n + begin] ^= 0x04
    if card_edit is not None:
        card = json.loads(header["__metadata__"][CARD_KEY])
        card_edit(card)
        header["__metadata__"][CARD_KEY] = json.dumps(card)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    out.write_bytes(struct.pack("<Q", len(new)) + new + bytes(raw[8 + n:]))
    return out


CASES = {
    "std0": (dict(card_edit=lambda c: c["preprocessing"].update(std=[0, 0, 0])), "preprocessing.std"),
    "size100000": (dict(card_edit=lambda c: c.update(input_size=100000)), "input_size"),
    "flipped-bit": (dict(flip_in="head.layers.1.weight"), "checksum mismatch"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_engine_and_cxr_screen_refuse(good_model, tmp_path, cxr_dir, case):
    from cxr_desktop.cli.screen import EXIT_MODEL, main
    from cxr_desktop.inference.engine import EngineOptions, load_engine

    kwargs, words = CASES[case]
    bad = _rewrite(good_model, tmp_path / f"{case}.safetensors", **kwargs)
    with pytest.raises(ModelFileError, match=words):
        load_engine(bad, options=EngineOptions(device="cpu", backend="torch"))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes((cxr_dir / "00000001_000.png").read_bytes())
    err = io.StringIO()
    out = tmp_path / "r.csv"
    code = main([str(folder), "--out", str(out), "--model", str(bad), "--workers", "0"], stderr=err)
    assert code == EXIT_MODEL, err.getvalue()
    assert words in err.getvalue() and "Traceback" not in err.getvalue()
    assert not out.exists()
