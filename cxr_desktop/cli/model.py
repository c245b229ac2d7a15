"""``cxr-model``: inspect, create and convert model files.

    cxr-model info FILE [--json]
    cxr-model init --classes A,B --out FILE [--positive B] [--weights imagenet|none|PATH] ...
    cxr-model convert SRC.pt --classes A,B --out FILE [--new-head] ...

Exit codes: 0 ok, 1 could not write the output, 2 usage error or refused file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

EXIT_OK = 0
EXIT_IO = 1
EXIT_REFUSED = 2


def _classes(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if len(names) < 2:
        raise argparse.ArgumentTypeError("give at least two comma-separated class names, e.g. normal,pneumonia")
    return names


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cxr-model", description="Inspect, create and convert CXR Review model files.")
    sub = ap.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="show a model file's card (the file is fully verified)")
    info.add_argument("file", type=Path)
    info.add_argument("--json", action="store_true", help="print the card and checksum as JSON")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--classes", type=_classes, required=True, help="comma-separated class names, in output order")
        p.add_argument("--out", type=Path, required=True, help="model file to write (.safetensors)")
        p.add_argument("--positive", help="class whose probability is the screening score (default: the last)")
        p.add_argument("--input-size", type=int, default=224, help="square input size in pixels (default 224)")
        p.add_argument("--head", choices=("linear", "mlp"), default="linear", help="classifier head (default linear)")
        p.add_argument("--name", help="model name shown in the app")
        p.add_argument("--half", action="store_true", help="store weights as fp16 (half the file size)")
        p.add_argument("--seed", type=int, help="random seed for freshly initialised layers")
        p.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    init = sub.add_parser("init", help="create an untrained model file (ImageNet-initialised when available)")
    common(init)
    init.add_argument("--weights", default="imagenet", help="imagenet (offline cache), none, or a weights file PATH")
    init.add_argument("--weights-sha256", help="expected sha256 of the --weights file")

    conv = sub.add_parser("convert", help="make a model file from a research state dict (.pt/.pth/.safetensors)")
    conv.add_argument("src", type=Path)
    common(conv)
    conv.add_argument("--new-head", action="store_true", help="start an untrained head when fc cannot be used")
    return ap


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _nested(d: dict[str, Any], indent: str, out: list[str]) -> None:
    for k in sorted(d):
        v = d[k]
        if isinstance(v, dict) and v:
            out.append(f"{indent}{k}:")
            _nested(v, indent + "  ", out)
        else:
            out.append(f"{indent}{k}: {_fmt(v)}")


def _summary(loaded: Any) -> str:
    card = loaded.card
    pre = card.preprocessing
    head = ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(card.head.items()) if k != "type")
    lines = [
        f"Model:           {card.display_name}" + ("  [DEMONSTRATION]" if card.demonstration else ""),
        f"File:            {Path(loaded.path).name}",
        f"SHA-256:         {loaded.sha256}",
        f"Architecture:    {card.architecture}, head {card.head.get('type')}" + (f" ({head})" if head else ""),
        f"Classes:         {', '.join(card.classes)}",
        f"Positive class:  {card.classes[card.positive_index]} (index {card.positive_index})",
        f"Input size:      {card.input_size} x {card.input_size}",
        f"Preprocessing:   {pre.get('id')} v{pre.get('version')}; resize {pre.get('resize')}; "
        f"mean {_fmt(pre.get('mean'))}; std {_fmt(pre.get('std'))}",
        f"Threshold:       {_fmt(float(card.decision_threshold))}",
        f"Demonstration:   {'yes' if card.demonstration else 'no'}",
        f"Intended use:    {card.intended_use}",
    ]
    for title, section in (("Provenance", card.provenance), ("Metrics", card.metrics)):
        lines.append(f"{title}:")
        if section:
            _nested(section, "  ", lines)
        else:
            lines.append("  (none recorded)")
    lines.append("Warnings:")
    lines += [f"  - {w}" for w in card.warnings] or ["  (none)"]
    if loaded.extra_tensors:
        lines.append("Extra tensors:")
        lines += [f"  {k}: {list(t.shape)}" for k, t in sorted(loaded.extra_tensors.items())]
    return "\n".join(lines)


def _info(args: argparse.Namespace, out: TextIO) -> int:
    import dataclasses

    from cxr_desktop.model.modelfile import load_model

    loaded = load_model(args.file)
    if args.json:
        doc = {
            "file": Path(loaded.path).name,
            "sha256": loaded.sha256,
            "card": dataclasses.asdict(loaded.card),
            "extra_tensors": {k: list(t.shape) for k, t in sorted(loaded.extra_tensors.items())},
        }
        print(json.dumps(doc, indent=2, sort_keys=True), file=out)
    else:
        print(_summary(loaded), file=out)
    return EXIT_OK


def _check_out(args: argparse.Namespace) -> None:
    if args.out.exists() and not args.force:
        raise ValueError(f"{args.out} already exists; use --force to overwrite it.")
    if not args.out.parent.is_dir():
        raise ValueError(f"The folder {args.out.parent} does not exist.")


def _report(path: Path, sha: str, warnings: Sequence[str], out: TextIO, err: TextIO) -> None:
    print(f"Wrote {path} (sha256 {sha})", file=out)
    for w in warnings:
        print(f"warning: {w}", file=err)


def _init(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from cxr_desktop.model.modelfile import save_model
    from cxr_desktop.model.weights import init_model

    _check_out(args)
    model, card = init_model(
        classes=args.classes, positive_class=args.positive, weights=args.weights,
        input_size=args.input_size, head=args.head, name=args.name or "untrained", seed=args.seed,
        expected_sha256=args.weights_sha256,
    )
    sha = save_model(args.out, model, card, half=args.half)
    _report(args.out, sha, card.warnings, out, err)
    return EXIT_OK


def _convert(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from cxr_desktop.model.modelfile import convert_checkpoint

    _check_out(args)
    res = convert_checkpoint(
        args.src, args.out, classes=args.classes, positive_class=args.positive, head=args.head,
        name=args.name, input_size=args.input_size, half=args.half, new_head=args.new_head, seed=args.seed,
    )
    if res.dropped_keys:
        print(f"note: ignored the checkpoint's head tensors: {', '.join(res.dropped_keys)}", file=err)
    _report(Path(res.path), res.sha256, res.card.warnings, out, err)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cxr-model``; returns the exit code."""
    out, err = sys.stdout, sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_REFUSED
    from cxr_desktop.errors import ModelFileError

    try:
        if args.command == "info":
            return _info(args, out)
        if args.command == "init":
            return _init(args, out, err)
        return _convert(args, out, err)
    except ModelFileError as exc:
        print(f"cxr-model: refused: {exc}", file=err)
        return EXIT_REFUSED
    except ValueError as exc:
        print(f"cxr-model: error: {exc}", file=err)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"cxr-model: could not write: {exc}", file=err)
        return EXIT_IO


if __name__ == "__main__":
    sys.exit(main())
