"""``cxr-model``: inspect, create and convert model files.

    cxr-model info FILE [--json]
    cxr-model init --classes A,B --out FILE [--positive B] [--weights imagenet|none|PATH] ...
    cxr-model convert SRC.pt --classes A,B --out FILE [--new-head] ...
    cxr-model weights [--download [--url URL] | --import FILE] [--sha256 HEX] [--dir DIR]

Exit codes: 0 ok, 1 could not write the output (or the download failed), 2 usage error
or refused file (also a weights file with the wrong checksum), 130 interrupted.
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

    info = sub.add_parser("info", help="show a model file's card (the file is checked in full; its weights are "
                                       "verified against the checksum on its card when it has one)")
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

    wts = sub.add_parser(
        "weights", help="show, download or import the ImageNet weights new models start from",
        description="Without options: where ImageNet weights are looked for and what is installed. --download "
        "fetches torchvision's ResNet50 weights (about 100 MB; resumable; honours HTTPS_PROXY/NO_PROXY) into the "
        "user data folder; --import FILE installs a copy brought in by other means (offline sites). Both verify "
        "the sha256.")
    act = wts.add_mutually_exclusive_group()
    act.add_argument("--download", action="store_true", help="download torchvision's ResNet50 ImageNet weights")
    act.add_argument("--import", dest="import_file", type=Path, metavar="FILE",
                     help="install this weights file (e.g. resnet50-11ad3fa6.pth) after checking its sha256")
    wts.add_argument("--url", help="download from this URL instead (a local mirror; default: $CXR_WEIGHTS_URL, "
                     "else torchvision's)")
    wts.add_argument("--sha256", help="expected full sha256, for a file whose name carries no checksum")
    wts.add_argument("--dir", type=Path, help="install into this folder instead of the user data folder")

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
        f"Weights:         {loaded.weights_status}",  # "verified" only when the stored checksum matches
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
    from cxr_desktop.model.lineage import lineage_lines

    chain = lineage_lines(card)
    lines.append("Lineage:         " + (chain[0] if chain else "none recorded in the card (trained from ImageNet or random weights, or saved before lineage was recorded)"))
    lines += [" " * 17 + line for line in chain[1:]]
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


def _info(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import dataclasses

    from cxr_desktop.model.modelfile import load_model

    loaded = load_model(args.file)
    if args.json:
        doc = {
            "file": Path(loaded.path).name,
            "sha256": loaded.sha256,
            "weights": loaded.weights_status,
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
    from cxr_desktop.model.checkpoint_convert import convert_checkpoint

    _check_out(args)
    res = convert_checkpoint(
        args.src, args.out, classes=args.classes, positive_class=args.positive, head=args.head,
        name=args.name, input_size=args.input_size, half=args.half, new_head=args.new_head, seed=args.seed,
    )
    if res.dropped_keys:
        print(f"note: ignored the checkpoint's head tensors: {', '.join(res.dropped_keys)}", file=err)
    _report(Path(res.path), res.sha256, res.card.warnings, out, err)
    return EXIT_OK


def _weights_status(out: TextIO) -> int:
    import torch

    from cxr_desktop.model.weights import WEIGHTS_DIR_ENV, find_imagenet_weights, list_weights, user_weights_dir
    from cxr_desktop.model.weights_download import URL_ENV, weights_url

    found = find_imagenet_weights()
    print("ImageNet weights (torchvision ResNet50), used as the starting point of new models:", file=out)
    print(f"  in use: {found}" if found else "  in use: none installed - new models start from random weights",
          file=out)
    print("Looked for in (in order):", file=out)
    user = user_weights_dir()
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for d, files, parts in list_weights():
        kind = "user data folder" if d == user else "torch hub cache" if d == hub else f"${WEIGHTS_DIR_ENV}"
        print(f"  {d}  ({kind})", file=out)
        for f in files:
            state = "checksum ok" if f.checksum_ok else "CHECKSUM WRONG - damaged or renamed; delete it"
            print(f"    {f.path.name}  {f.size / 1e6:.1f} MB  {f.variant or ''}  {state}", file=out)
        for pt in parts:
            print(f"    {pt.name}  {pt.stat().st_size / 1e6:.1f} MB  partial download: run --download to resume",
                  file=out)
    if not found:
        print(f"Get them: cxr-model weights --download  (from {weights_url()}; set ${URL_ENV} for a local mirror)\n"
              "      or: cxr-model weights --import FILE  (a copy of resnet50-11ad3fa6.pth brought in by other means)",
              file=out)
    return EXIT_OK


def _weights(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import time

    from cxr_desktop.model.weights_download import download_weights, import_weights, weights_url
    from cxr_desktop.training.relay import drain

    if not args.download and args.import_file is None:
        if args.url or args.sha256 or args.dir:
            raise ValueError("--url, --sha256 and --dir go with --download or --import.")
        return _weights_status(out)
    try:
        if args.import_file is not None:
            if args.url:
                raise ValueError("--url goes with --download, not --import.")
            path = import_weights(args.import_file, args.dir, sha256=args.sha256)
            print(f"Installed {path} (sha256 checked).", file=out)
            return EXIT_OK
        url = weights_url(args.url)
        print(f"Downloading {url}", file=err)
        last = [0.0]

        def show(p: Any) -> None:
            now = time.monotonic()
            if p.total and (now - last[0] >= 2.0 or p.done == p.total):
                last[0] = now
                resumed = f", resumed at {p.resumed_from / 1e6:.1f} MB" if p.resumed_from else ""
                print(f"  {p.done / 1e6:.1f} of {p.total / 1e6:.1f} MB ({100 * p.done / p.total:.0f} %{resumed})",
                      file=err)

        path = drain(download_weights(url, args.dir, sha256=args.sha256), show)
        print(f"Installed {path} (sha256 checked).", file=out)
        return EXIT_OK
    except KeyboardInterrupt:
        print("cxr-model: interrupted; the part received is kept - run the same command again to resume.", file=err)
        return 130


_COMMANDS = {"info": _info, "init": _init, "weights": _weights, "convert": _convert}


def failure_exit(exc: Exception, err: TextIO, prog: str = "cxr-model") -> int:
    """Say on ``err`` why a model command was refused or failed, and return its exit code;
    anything but an expected failure is raised again. Also used by ``cli.model_checksum``."""
    from cxr_desktop.errors import ModelFileError
    from cxr_desktop.model.weights_download import ChecksumError, WeightsDownloadError

    kinds: tuple[tuple[type[Exception], str, int], ...] = (  # most specific first
        (ChecksumError, "refused", EXIT_REFUSED),  # a weights file with the wrong sha256
        (WeightsDownloadError, "failed", EXIT_IO),
        (ModelFileError, "refused", EXIT_REFUSED),
        (ValueError, "error", EXIT_REFUSED),
        (OSError, "could not write", EXIT_IO),
    )
    for kind, what, code in kinds:
        if isinstance(exc, kind):
            print(f"{prog}: {what}: {exc}", file=err)
            return code
    raise exc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cxr-model``; returns the exit code."""
    out, err = sys.stdout, sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_REFUSED
    try:
        return _COMMANDS[args.command](args, out, err)
    except Exception as exc:
        return failure_exit(exc, err)


if __name__ == "__main__":
    sys.exit(main())
