"""Research checkpoints -> model files, once, without running code from the checkpoint.

A research script leaves a plain PyTorch state dict (``.pt``/``.pth``, or safetensors
without a model card). :func:`convert_checkpoint` reads it with
``torch.load(weights_only=True)`` only (anything but tensors is refused, since a pickle
can execute code), then works in four steps, each a function here:

1. key remapping (:func:`remap_keys`): torchvision ResNet50 names (``conv1.``, ``layer1.``,
   ..., ``fc.``) or this app's own (``body.``, ``head.``) sorted into body, head and ``fc``;
2. head mapping (:func:`map_head`): the checkpoint's ``fc`` becomes the head when it is a
   single Linear with one output per class; otherwise only ``new_head`` (a fresh, untrained
   head) goes on;
3. checks (:func:`check_state`): every tensor the architecture needs, none it does not,
   shapes, no NaN or infinity;
4. the card (:func:`conversion_card`): the provenance (the checkpoint's name and sha256)
   and the warning that threshold and metrics are unknown.

The model file itself is written by :func:`cxr_desktop.model.modelfile.save_model`.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from cxr_desktop.errors import ModelFileError
from cxr_desktop.model.architecture import CxrClassifier, build_classifier
from cxr_desktop.model.card import ModelCard, new_card, software_versions, utc_now_iso
from cxr_desktop.model.modelfile import (
    CARD_KEY,
    check_path,
    file_sha256,
    final_head_key,
    is_batch_counter,
    kind_refusal,
    name_examples,
    nonfinite_keys,
    read_header,
    read_regular,
    resolve_head,
    save_model,
    sniff_format,
)

_BODY_ROOTS = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
_NEW_HEAD_ADVICE = ("Use --new-head to start a fresh, untrained head (the model must then be trained with "
                    "cxr-train before use).")

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_checkpoint` wrote."""

    path: str
    sha256: str
    card: ModelCard
    head_converted: bool  # False: the head is new and untrained
    dropped_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckpointKeys:
    """A checkpoint's tensors under this app's names: ``body.*``, and the head as either this
    app's ``head.*`` (``head``) or torchvision's ``fc.*`` (``fc``); at most one of them is set."""

    body: Tensors
    head: Tensors = field(default_factory=dict)
    fc: Tensors = field(default_factory=dict)


@dataclass(frozen=True)
class HeadMapping:
    """The head tensors to load (empty: a new, untrained head) and the checkpoint's head tensors left out."""

    head: Tensors
    dropped: tuple[str, ...] = ()


# --------------------------------------------------------------------------- reading


def extract_state_dict(obj: Any, p: Path | None = None) -> Tensors:
    """A ``{name: tensor}`` dict from a loaded checkpoint (plain, or wrapped as ``{"state_dict": ...}``),
    with ``module.`` (DataParallel) prefixes removed."""
    def is_sd(o: Any) -> bool:
        return isinstance(o, Mapping) and bool(o) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in o.items()
        )

    if not is_sd(obj) and isinstance(obj, Mapping):
        obj = next((obj[k] for k in _WRAPPER_KEYS if k in obj and is_sd(obj[k])), obj)
    if not is_sd(obj):
        raise ModelFileError(
            "The checkpoint does not hold a state dict (a mapping of names to tensors). Save the "
            "weights with torch.save(model.state_dict(), 'weights.pt') and convert that file.",
            p,
        )
    out = {}
    for k, v in obj.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def read_checkpoint(p: Path) -> Tensors:
    """Tensors of a research checkpoint: safetensors, or torch.load(weights_only=True) and nothing else."""
    prefix, size = read_regular(p, lambda fh, size, _p: (fh.read(9), size))
    kind = sniff_format(prefix)
    if kind == "empty":
        raise kind_refusal(kind, p, size)
    if kind == "safetensors":
        return _read_safetensors_checkpoint(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise ModelFileError(
            f"The checkpoint was refused: it contains objects other than tensors{what}, and loading "
            "them would run code from the file (pickle). Only plain state dicts are converted. In the "
            "research environment, save just the weights with torch.save(model.state_dict(), "
            "'weights.pt') and convert that file.",
            p,
        ) from None
    except Exception as exc:
        raise ModelFileError(
            f"The file could not be read as a PyTorch checkpoint ({exc.__class__.__name__}); it is "
            "damaged or not a checkpoint.",
            p,
        ) from None
    return extract_state_dict(obj, p)


def _read_safetensors_checkpoint(p: Path) -> Tensors:
    """A safetensors state dict (its header checked first); a model file is refused (nothing to convert)."""
    if CARD_KEY in read_regular(p, read_header).metadata:
        raise ModelFileError("This is already a CXR Review model file; there is nothing to convert.", p)
    from safetensors.torch import load_file

    try:
        return extract_state_dict(load_file(str(p)), p)
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"The safetensors file is corrupt ({exc}).", p) from None


# --------------------------------------------------------------------------- the four steps


def remap_keys(sd: Mapping[str, torch.Tensor], p: Path) -> CheckpointKeys:
    """Step 1: sort a state dict into body and head under this app's names.

    This app's own layout (every key ``body.*`` or ``head.*``) is kept as it is; torchvision's
    ResNet50 names get ``body.`` in front, and its ``fc.*`` is kept apart for :func:`map_head`.
    Any other name means the checkpoint is not a ResNet50 (refused).
    """
    if all(k.startswith(("body.", "head.")) for k in sd):
        return CheckpointKeys(body={k: v for k, v in sd.items() if k.startswith("body.")},
                              head={k: v for k, v in sd.items() if k.startswith("head.")})
    other = [k for k in sd if not k.startswith(_BODY_ROOTS) and not k.startswith("fc.")]
    if other:
        raise ModelFileError(
            f"The checkpoint is not a ResNet50 state dict: {len(other)} tensors have unknown names "
            f"(e.g. {name_examples(other)}).",
            p,
        )
    return CheckpointKeys(body={"body." + k: v for k, v in sd.items() if k.startswith(_BODY_ROOTS)},
                          fc={k: v for k, v in sd.items() if k.startswith("fc.")})


def fc_linear(fc: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight, bias) when the checkpoint's ``fc`` is a single Linear layer (``fc.x`` or ``fc.N.x``)."""
    prefixes = {k.rsplit(".", 1)[0] for k in fc}
    if len(prefixes) != 1:
        return None
    pre = prefixes.pop()
    w, b = fc.get(pre + ".weight"), fc.get(pre + ".bias")
    if w is None or b is None or len(fc) != 2 or w.dim() != 2 or b.dim() != 1:
        return None
    return w, b


def map_head(keys: CheckpointKeys, expected: Mapping[str, torch.Tensor], spec: Mapping[str, Any],
             classes: Sequence[str], *, new_head: bool, p: Path) -> HeadMapping:
    """Step 2: the head tensors to load, from the checkpoint's ``fc`` or ``head.*``.

    The final layer must have one output per class unless ``new_head`` (then the checkpoint's
    head is dropped and the head starts untrained). A torchvision ``fc`` maps only onto the
    linear head, and only when it is a single Linear of the expected shape.
    """
    last = final_head_key(expected)
    bias = last[: -len("weight")] + "bias"
    if keys.head:
        lin = (keys.head[last], keys.head[bias]) if last in keys.head else None
    else:
        lin = fc_linear(keys.fc) if keys.fc else None
    outputs = lin[0].shape[0] if lin is not None else None
    if outputs is not None and outputs != len(classes) and not new_head:
        raise ModelFileError(
            f"The checkpoint's final layer has {outputs} outputs but {len(classes)} classes were "
            f"given ({', '.join(classes)}). List the classes in the order the model was trained "
            "with, or use --new-head to start an untrained head.",
            p,
        )
    if new_head:
        return HeadMapping(head={}, dropped=tuple(sorted(keys.fc) + sorted(keys.head)))
    if keys.fc:
        if lin is None or spec["type"] != "gap_dropout_linear" or lin[0].shape != expected[last].shape:
            raise ModelFileError(
                f"The checkpoint's classifier (fc: {name_examples(sorted(keys.fc))}) cannot be mapped onto a "
                f"{spec['type']} head. {_NEW_HEAD_ADVICE}",
                p,
            )
        return HeadMapping(head={last: lin[0], bias: lin[1]})
    if not keys.head:
        raise ModelFileError(f"The checkpoint has no classifier layer (fc). {_NEW_HEAD_ADVICE}", p)
    return HeadMapping(head=dict(keys.head))


def check_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                spec: Mapping[str, Any], *, with_head: bool, p: Path) -> None:
    """Step 3: the tensors fit the architecture: none missing (head tensors only ``with_head``),
    none unexpected, every shape as expected, no NaN or infinity."""
    missing = [k for k in expected
               if k not in state and not is_batch_counter(k) and (k.startswith("body.") or with_head)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ModelFileError(
            f"The checkpoint does not match a ResNet50 with a {spec['type']} head: {len(missing)} "
            f"tensors missing ({name_examples(missing)}), {len(unexpected)} unexpected "
            f"({name_examples(unexpected)}).",
            p,
        )
    wrong = [k for k in state if tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise ModelFileError(
            f"{len(wrong)} tensors have the wrong shape for ResNet50 (e.g. {k} is "
            f"{list(state[k].shape)}, expected {list(expected[k].shape)}).",
            p,
        )
    bad = nonfinite_keys(state)
    if bad:
        raise ModelFileError(
            f"The checkpoint contains NaN or infinite weights (e.g. {name_examples(bad)}); it cannot be used.",
            p,
        )


def conversion_card(src: Path, *, classes: Sequence[str], positive_class: str | None, spec: dict[str, Any],
                    name: str | None, input_size: int, head_converted: bool) -> ModelCard:
    """Step 4: the card of a converted model: where it came from (name and sha256 of the
    checkpoint), and warnings that threshold and metrics are unknown (and, for a new head,
    that its outputs mean nothing until it is trained)."""
    warnings = [
        f"Converted from a research checkpoint ({src.name}): the decision threshold (0.5) and the "
        "performance metrics are unknown. Validate the model on local data before relying on it."
    ]
    if not head_converted:
        warnings.append(
            "Untrained head: the classifier head is new (random). The model's outputs are "
            "meaningless until it is trained with cxr-train."
        )
    provenance = {
        "source": "converted",
        "note": f"converted from {src.name}",
        "converted_from": src.name,
        "source_sha256": file_sha256(src),
        "head": "from checkpoint fc" if head_converted else "new (untrained)",
        "created": utc_now_iso(),
        "software": software_versions(),
    }
    return new_card(name=name or src.stem, classes=list(classes), positive_class=positive_class, head=spec,
                    input_size=input_size, provenance=provenance, warnings=warnings)


# --------------------------------------------------------------------------- the whole conversion


def _new_model(num_classes: int, spec: Mapping[str, Any], seed: int | None) -> CxrClassifier:
    """The classifier the checkpoint is loaded into (its fresh layers seeded when ``seed`` is given)."""
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return build_classifier(num_classes=num_classes, head=dict(spec))


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    positive_class: str | None = None,
    head: str | Mapping[str, Any] | None = None,
    name: str | None = None,
    input_size: int = 224,
    half: bool = False,
    new_head: bool = False,
    seed: int | None = None,
) -> ConversionResult:
    """Make a model file from a research state dict (torchvision ResNet50 keys or this app's keys).

    The checkpoint is read with ``torch.load(weights_only=True)`` only, which refuses
    anything that would run code. ``fc.*`` becomes the head when it is a single Linear
    with one output per class; otherwise pass ``new_head=True`` for a fresh, untrained
    head. The card records the provenance and warns that threshold and metrics are unknown.
    """
    src_p = check_path(src)
    if Path(dst).resolve() == src_p.resolve():
        raise ValueError("The output file must differ from the checkpoint.")
    classes = list(classes)
    spec = resolve_head(head)
    keys = remap_keys(read_checkpoint(src_p), src_p)
    model = _new_model(len(classes), spec, seed)
    expected = model.state_dict()
    mapped = map_head(keys, expected, spec, classes, new_head=new_head, p=src_p)
    head_converted = bool(mapped.head)
    state = {**keys.body, **mapped.head}
    check_state(state, expected, spec, with_head=head_converted, p=src_p)
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}, strict=False)
    model.eval()
    card = conversion_card(src_p, classes=classes, positive_class=positive_class, spec=spec, name=name,
                           input_size=input_size, head_converted=head_converted)
    sha = save_model(dst, model, card, half=half)
    return ConversionResult(
        path=str(dst), sha256=sha, card=card, head_converted=head_converted, dropped_keys=mapped.dropped
    )
