#!/usr/bin/env bash
# Rebuild the demonstration model, resources/models/demo-cxr.safetensors, with cxr-train itself.
#
#   training/build_demo_model.sh            (from the repository root or anywhere)
#
# 1. training/make_demo_dataset.py: real radiographs from ../shared/data/cxr, each in several
#    variants, half of them with a synthetic focal opacity (seeded, deterministic).
# 2. cxr-train on that folder, split by source image (--patient-regex), random initial weights
#    (no ImageNet weights offline; the card says so), fp16 weights, demonstration card.
# Environment: PYTHON (default .venv/bin/python), WORK (default build/demo), THREADS (default 1:
# on a busy shared 2-core machine one thread is much faster than two that wait for each other).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-build/demo}
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS

rm -rf "$WORK/data"
mkdir -p "$WORK" resources/models
"$PY" training/make_demo_dataset.py --out "$WORK/data" --variants 16 --size 256 --seed 0 \
    --contrast 0.35 0.6 --radius 0.07 0.13

"$PY" -m cxr_desktop.cli.train "$WORK/data" \
    --out resources/models/demo-cxr.safetensors --work-dir "$WORK/run" --report "$WORK/demo-cxr-report.html" \
    --patient-regex '^(src\d+)_' --weights none --input-size 112 \
    --epochs-frozen 0 --epochs-finetune 12 --batch-size 16 --lr-finetune 5e-4 --augment light \
    --patience 6 --seed 0 --threads "$THREADS" --half \
    --name "CXR Review demonstration model" --model-version "demo-1" --demonstration \
    --warning "Demonstration model trained on synthetic opacities added to a few dozen public chest radiographs; it is NOT for clinical use and its outputs mean nothing about real patients." \
    --warning "Trained from random initial weights (no ImageNet weights were available offline); a real model needs ImageNet initialisation and real labelled data." \
    --intended-use "Demonstration of CXR Review's workflow only (viewer, Grad-CAM, screening, training). Not for clinical use." \
    "$@"
