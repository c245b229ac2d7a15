"""Foundation benchmarks, one run, figures and ratios against named baselines.

(a) model-only forward img/s at batch 1 and 8: torch eager (baseline) vs
    channels_last, TorchScript-frozen and ONNX Runtime (the product's CPU path);
(b) predict + Grad-CAM per image: the engine (head-only CAM) vs pytorch-grad-cam's
    GradCAM (baseline) and vs predict alone; every CAM method (Grad-CAM++, HiResCAM,
    Layer-CAM) vs predict alone (goal <= 1.15x), also with the dilated last stage
    (output stride 16, a 14 x 14 map) against the standard model's predict;
(c) file -> model input time per format.

Usage: python bench/bench_engine.py [--seconds 5] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_desktop.imaging import load_image  # noqa: E402
from cxr_desktop.inference.engine import EngineOptions, InferenceEngine  # noqa: E402
from cxr_desktop.model.architecture import build_classifier  # noqa: E402
from cxr_desktop.model.card import ModelCard, default_preprocessing  # noqa: E402
from cxr_desktop.preprocess import load_for_model, preprocess  # noqa: E402


def rate(fn, n_per_call: int, seconds: float) -> float:
    fn()
    fn()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        fn()
        n += n_per_call
    return n / (time.perf_counter() - t0)


def per_call_ms(fn, seconds: float) -> float:
    return 1000.0 / rate(fn, 1, seconds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu")

    torch.manual_seed(0)
    model = build_classifier(num_classes=2).eval()
    card = ModelCard(name="bench", classes=["normal", "abnormal"], positive_class="abnormal",
                     preprocessing=default_preprocessing(224))
    cache = Path(tempfile.mkdtemp(prefix="cxr-bench-"))

    # (a) model-only forward
    print("\n(a) model-only forward, img/s (baseline: torch eager fp32)")
    cl = build_classifier(num_classes=2).eval()
    cl.load_state_dict(model.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        frozen = torch.jit.freeze(torch.jit.trace(model, torch.zeros(1, 3, 224, 224)).eval())
    eng = InferenceEngine(model, card, model_sha256="bench" * 8,
                          options=EngineOptions(device="cpu", backend="onnx", cache_dir=cache))
    assert eng.backend.name == "onnxruntime-cpu", eng.notes
    results = {}
    for bs in (1, 8):
        x = torch.randn(bs, 3, 224, 224)
        xn = x.numpy()
        with torch.inference_mode():
            results[("eager", bs)] = rate(lambda: model(x), bs, args.seconds)
            xc = x.contiguous(memory_format=torch.channels_last)
            results[("channels_last", bs)] = rate(lambda: cl(xc), bs, args.seconds)
            results[("torchscript_frozen", bs)] = rate(lambda: frozen(x), bs, args.seconds)
        results[("onnxruntime (product)", bs)] = rate(lambda: eng.predict_inputs(xn), bs, args.seconds)
        with torch.inference_mode():
            ref_logits = model(x)
            ref = torch.softmax(ref_logits, 1).numpy()
            got_logits = eng.head(eng.backend.features(xn)).numpy()
        diff = float(np.abs(ref - eng.predict_inputs(xn)).max())
        ldiff = float(np.abs(ref_logits.numpy() - got_logits).max())
        print(f"  batch {bs}: max |p_onnx - p_torch| = {diff:.2e}, max |logit diff| = {ldiff:.2e} "
              f"(random weights: probabilities are near 0/1, so see the trained-model check below)")
    for bs in (1, 8):
        base = results[("eager", bs)]
        for name in ("eager", "channels_last", "torchscript_frozen", "onnxruntime (product)"):
            v = results[(name, bs)]
            print(f"  batch {bs:>2} {name:<24} {v:6.1f} img/s   x{v / base:4.2f} vs eager")

    # equality on a trained model and real images (non-saturated probabilities)
    from cxr_desktop.paths import default_model_path

    if default_model_path().exists():
        from cxr_desktop.inference.engine import load_engine

        demo = load_engine(default_model_path(), options=EngineOptions(device="cpu", backend="onnx", cache_dir=cache))
        files = sorted((args.data / "cxr").glob("*.png")) + sorted((args.data / "cxr" / "figure1").glob("*.jpg"))[:14]
        xs = np.stack([preprocess(load_image(f), input_size=demo.card.input_size) for f in files])
        with torch.inference_mode():
            ref = torch.softmax(demo._cpu_model(torch.from_numpy(xs)), 1).numpy()
        got = demo.predict_inputs(xs)
        print(f"  demonstration model, {len(files)} real radiographs at {demo.card.input_size} px: "
              f"p(positive) range {ref[:, demo.card.positive_index].min():.3f}-{ref[:, demo.card.positive_index].max():.3f}, "
              f"max |p_onnx - p_torch| = {np.abs(ref - got).max():.2e} (goal <= 1e-4)")

    # (b) predict + Grad-CAM
    print("\n(b) predict + Grad-CAM, ms/image at batch 1 (baseline: pytorch-grad-cam GradCAM)")
    img_path = args.data / "cxr" / "00000001_000.png"
    img = load_image(img_path)
    x1 = preprocess(img, input_size=224)[None]
    t_pred = per_call_ms(lambda: eng.predict_inputs(x1), args.seconds)
    t_cam = per_call_ms(lambda: eng.run_batch(x1, cam=True), args.seconds)
    t_full = per_call_ms(lambda: eng.predict(img, cam=True), args.seconds)
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        xt = torch.from_numpy(x1)
        with GradCAM(model=model, target_layers=[model.target_layer]) as ref:
            t_ref = per_call_ms(lambda: ref(input_tensor=xt, targets=[ClassifierOutputTarget(1)]), args.seconds)
    except ImportError:
        t_ref = float("nan")
    print(f"  predict alone (engine)                 {t_pred:7.1f} ms")
    print(f"  predict + CAM (engine, head-only CAM)  {t_cam:7.1f} ms   x{t_cam / t_pred:4.2f} vs predict alone")
    print(f"  file-decoded image -> result + heatmap in image geometry {t_full:7.1f} ms")
    print(f"  pytorch-grad-cam GradCAM (torch eager) {t_ref:7.1f} ms   engine is x{t_ref / t_cam:4.2f} faster")
    cam_methods(model, card, cache, x1, t_pred, args.seconds)

    # (c) file -> model input
    print("\n(c) file -> model input (decode + preprocess) at 224 px, ms/file: full-resolution decode (baseline, "
          "what the viewer shows) vs load_for_model (what the model reads: reduced decode where the codec allows)")
    cases = {
        "PNG 8-bit 512x512": args.data / "cxr" / "00000001_000.png",
        "JPEG 2373x2373": args.data / "cxr" / "covid-19-pneumonia-58-prior.jpg",
        "DICOM JPEG baseline 1024x1024": args.data / "cxr" / "siim_pneumothorax_sample.dcm",
        "DICOM uncompressed (MR2_UNCR 1024x1024)": args.data / "dicom" / "MR2_UNCR.dcm",
        "DICOM JPEG 2000 (RG1_J2KI 1955x1841)": args.data / "dicom" / "RG1_J2KI.dcm",
        "DICOM JPEG 2000 lossless (MR2_J2KR)": args.data / "dicom" / "MR2_J2KR.dcm",
        "DICOM JPEG-LS (emri_small_jpeg_ls)": args.data / "dicom" / "emri_small_jpeg_ls_lossless.dcm",
        "DICOM RLE (OBXXXX1A_rle 600x800)": args.data / "dicom" / "OBXXXX1A_rle.dcm",
    }
    for name, path in cases.items():
        if not path.exists():
            print(f"  {name:<42} missing ({path})")
            continue
        ms = per_call_ms(lambda: preprocess(load_image(path), input_size=224), min(args.seconds, 2.0))
        fast = per_call_ms(lambda: preprocess(load_for_model(str(path), input_size=224), input_size=224),
                           min(args.seconds, 2.0))
        print(f"  {name:<42} {ms:7.1f} ms  load_for_model {fast:7.1f} ms  x{ms / fast:4.1f}")
    return 0


def cam_methods(model, card, cache: Path, x1: np.ndarray, t_pred32: float, seconds: float) -> None:
    """(b2) predict + each CAM method vs predict alone (ONNX Runtime engine), output stride 32 and 16."""
    from cxr_desktop.inference.cam import CAM_METHODS, make_cam
    from cxr_desktop.model.architecture import with_output_stride

    print("\n(b2) predict + CAM per method, ms/image at batch 1 (baseline: predict alone, same model; goal <= 1.15x)")
    for stride in (32, 16):
        m = with_output_stride(model, stride).eval()
        c = ModelCard(**{**card.__dict__, "output_stride": stride})
        eng = InferenceEngine(m, c, model_sha256=f"bench-os{stride}" * 4,
                              options=EngineOptions(device="cpu", backend="onnx", cache_dir=cache))
        t_pred = per_call_ms(lambda: eng.predict_inputs(x1), seconds)
        side = c.input_size // stride
        print(f"  output stride {stride} ({side}x{side} map), {eng.backend.name}: predict alone {t_pred:7.1f} ms"
              + ("" if stride == 32 else f"   x{t_pred / t_pred32:4.2f} vs stride 32's predict"))
        for name in CAM_METHODS:
            eng.cam = make_cam(name, eng.head)
            t = per_call_ms(lambda: eng.run_batch(x1, cam=True), seconds)
            print(f"    + {name:<10} {t:7.1f} ms   x{t / t_pred:4.2f} vs predict alone")


if __name__ == "__main__":
    raise SystemExit(main())
