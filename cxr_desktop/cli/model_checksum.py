"""``python -m cxr_desktop.cli.model_checksum FILE [--out OUT]``: store the weights checksum in an older model file.

Model files saved before ``tensors_sha256`` existed load with the status "not verified (no
checksum stored)": damage to their weights would go unnoticed. This re-saves such a file
with the sha256 of its tensors on its card, copying every tensor byte for byte (the file
is fully verified first; the new file is loaded again and must verify). New model files
get the checksum when they are saved, so this is needed once per older file.

Exit codes: 0 written, 1 could not write, 2 usage error or refused file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cxr_desktop.cli.model_checksum",
                                 description="Re-save a model file with the sha256 of its weights on its card.")
    ap.add_argument("file", type=Path, help="model file (.safetensors)")
    ap.add_argument("--out", type=Path, help="write here instead of replacing FILE (atomically)")
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if args.out is not None and args.out.exists() and not args.force:
        print(f"model-checksum: error: {args.out} already exists; use --force to overwrite it.", file=sys.stderr)
        return 2
    from cxr_desktop.cli.model import failure_exit
    from cxr_desktop.model.modelfile import add_tensors_checksum

    try:
        res = add_tensors_checksum(args.file, args.out)
    except Exception as exc:  # refused 2, could not write 1, as cxr-model
        return failure_exit(exc, sys.stderr, "model-checksum")
    note = " (the file already carried this checksum)" if res.already else ""
    print(f"Wrote {res.path}: weights verified, tensors sha256 {res.tensors_sha256}{note}; file sha256 {res.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
