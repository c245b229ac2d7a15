"""Input safety (issue 7): each scope rule on real files from ../shared/data where one exists,
synthetic DICOMs for the attributes the shared data lacks, and the learned feature-distance check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxr_desktop.imaging import load_image, probe
from cxr_desktop.scope import (
    CAUTION_MARK,
    RULE_CODES,
    Caution,
    LearnedScopeCheck,
    ScopeReason,
    ScopeResult,
    ScopeSettings,
    check_image,
    check_info,
    check_learned,
    from_loaded,
    learned_hook,
    scope_reason,
)
from cxr_desktop.scope import rules
from cxr_desktop.scope.learned import METHOD
from cxr_desktop.scope.rules import polarity

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"


# --------------------------------------------------------------------------- helpers


def real_cxr_paths(cxr_dir: Path, dicom_dir: Path) -> list[Path]:
    """Every genuine chest radiograph in the shared data (fake_monochrome1 is mislabelled on purpose)."""
    files = [p for p in sorted(cxr_dir.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    files = [p for p in files if p.name != "fake_monochrome1.dcm"]
    return files + [dicom_dir / "RG1_J2KI.dcm"]


@pytest.fixture(scope="module")
def real_cxrs(cxr_dir, dicom_dir):
    """(name, StudyImage) for every real CXR, decoded once for the module."""
    return [(p.name, load_image(p)) for p in real_cxr_paths(cxr_dir, dicom_dir)]


@pytest.fixture(scope="module")
def cxr_pixels(cxr_dir) -> np.ndarray:
    """A real 512 x 512 8-bit chest radiograph (NIH ChestX-ray14) as uint8."""
    return np.asarray(Image.open(cxr_dir / "00000001_000.png").convert("L"))


def write_dicom(path: Path, pixels: np.ndarray, **tags) -> Path:
    """An uncompressed single-frame DICOM with the given pixels and attributes (keyword=value)."""
    meta = FileMetaDataset()
    sop_class = tags.pop("SOPClassUID", DX_SOP_CLASS)
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Scope^Test"
    ds.PatientID = "SCOPE-PID-4711"
    defaults = {"Modality": "DX", "ViewPosition": "PA", "BodyPartExamined": "CHEST", "PatientAge": "045Y"}
    for key, value in {**defaults, **tags}.items():
        if value is not None:
            setattr(ds, key, value)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def codes(result) -> set[str]:
    return set(result.codes)


# --------------------------------------------------------------------------- real CXRs pass


def test_every_real_chest_radiograph_is_in_scope(real_cxrs):
    assert len(real_cxrs) >= 60  # cxr/ (9) + figure1 (55) + RG1_J2KI
    flagged = {name: check_image(im).message() for name, im in real_cxrs if not check_image(im).in_scope}
    assert flagged == {}


def test_rg1_is_a_cr_pa_chest_radiograph_and_passes(dicom_dir):
    im = load_image(dicom_dir / "RG1_J2KI.dcm")
    assert (im.metadata["modality"], im.metadata["view_position"], im.metadata["body_part"]) == ("CR", "PA", "CHEST")
    assert im.invert_for_display  # MONOCHROME1: shown (and scored) inverted, as it should be
    result = check_image(im)
    assert result.in_scope and result.reasons == []
    assert check_info(probe(dicom_dir / "RG1_J2KI.dcm")).in_scope


# --------------------------------------------------------------------------- inversion


def test_inverted_versions_of_every_real_cxr_are_flagged(real_cxrs):
    missed = []
    for name, im in real_cxrs:
        negative = dataclasses.replace(im, invert_for_display=not im.invert_for_display)
        if codes(check_image(negative)) != {rules.INVERTED}:
            missed.append(name)
    assert missed == []


def test_polarity_is_clearly_positive_on_real_cxrs_and_negated_by_inversion(real_cxrs):
    scores = []
    for _, im in real_cxrs:
        view = rules.model_view(im)
        pos, neg = polarity(view), polarity(1.0 - view)
        assert neg.score == pytest.approx(-pos.score, abs=1e-6)
        scores.append(pos.score)
    assert min(scores) > 0.1  # a margin, not a knife edge, on every real radiograph


def test_inverted_png_file_is_flagged(tmp_path, cxr_pixels):
    path = tmp_path / "negative.png"
    Image.fromarray(255 - cxr_pixels).save(path)
    result = check_image(load_image(path))
    assert result.codes == [rules.INVERTED]
    assert "inverted" in result.message().lower()


def test_mislabelled_monochrome1_file_is_flagged_with_a_hint(cxr_dir):
    # fake_monochrome1.dcm holds the SIIM image's positive pixels under a MONOCHROME1 tag, so the
    # correct display is a negative: exactly the mislabelled export the rule exists to catch.
    result = check_image(load_image(cxr_dir / "fake_monochrome1.dcm"))
    assert result.codes == [rules.INVERTED]
    assert "MONOCHROME1" in result.message()
    assert check_image(load_image(cxr_dir / "siim_pneumothorax_sample.dcm")).in_scope


# --------------------------------------------------------------------------- modality


@pytest.mark.parametrize("name, modality", [
    ("693_UNCR.dcm", "CT"), ("MR2_UNCR.dcm", "MR"), ("US1_UNCR.dcm", "US"), ("JPEG-LL.dcm", "NM"),
    ("liver.dcm", "SEG"),
])
def test_non_radiograph_modalities_are_flagged(dicom_dir, name, modality):
    result = check_image(load_image(dicom_dir / name))
    assert not result.in_scope
    reason = next(r for r in result.reasons if r.code == rules.MODALITY)
    assert f"Modality {modality}" in reason.message
    # the header alone is enough for this rule
    assert rules.MODALITY in check_info(probe(dicom_dir / name)).codes


def test_secondary_capture_needs_the_setting(dicom_dir):
    sc = load_image(dicom_dir / "SC_rgb.dcm")
    assert sc.metadata["modality"] == "OT"
    assert rules.SECONDARY_CAPTURE in check_image(sc).codes
    allowed = check_image(sc, ScopeSettings(allow_secondary_capture=True))
    assert rules.SECONDARY_CAPTURE not in allowed.codes
    assert rules.COLOUR in allowed.codes  # the other rules still apply
    # no Modality at all, Secondary Capture SOP class: treated as a secondary capture
    jlsl = load_image(dicom_dir / "JLSL_08_07_0_1F.dcm")
    assert jlsl.metadata["modality"] is None
    assert rules.SECONDARY_CAPTURE in check_image(jlsl).codes
    assert rules.SECONDARY_CAPTURE not in check_image(jlsl, ScopeSettings(allow_secondary_capture=True)).codes


def test_cr_modality_with_secondary_capture_sop_class_passes(cxr_dir):
    # the SIIM sample is Modality CR stored with the Secondary Capture SOP class
    im = load_image(cxr_dir / "siim_pneumothorax_sample.dcm")
    assert im.metadata["modality"] == "CR"
    assert im.metadata["sop_class_uid"].startswith(rules.SECONDARY_CAPTURE_SOP_PREFIX)
    assert check_image(im).in_scope


# --------------------------------------------------------------------------- multi-frame


@pytest.mark.parametrize("name, frames", [
    ("SC_rgb_2frame.dcm", 2), ("emri_small.dcm", 10), ("OBXXXX1A_2frame.dcm", 2), ("liver.dcm", 3),
])
def test_multi_frame_files_are_flagged(dicom_dir, name, frames):
    result = check_image(load_image(dicom_dir / name))
    reason = next(r for r in result.reasons if r.code == rules.MULTI_FRAME)
    assert f"{frames} frames" in reason.message
    assert rules.MULTI_FRAME in check_info(probe(dicom_dir / name)).codes


def test_single_frame_twin_is_not_flagged_as_multi_frame(dicom_dir):
    assert rules.MULTI_FRAME not in check_image(load_image(dicom_dir / "SC_rgb.dcm")).codes


# --------------------------------------------------------------------------- view, body part, age


@pytest.mark.parametrize("view, flagged", [
    ("LL", True), ("RL", True), ("LAT", True), ("LATERAL", True), ("LLD", True), ("RLO", True),
    ("PA", False), ("AP", False), ("AP SUPINE", False), (None, False),
])
def test_view_position(tmp_path, cxr_pixels, view, flagged):
    im = load_image(write_dicom(tmp_path / "v.dcm", cxr_pixels, ViewPosition=view))
    result = check_image(im)
    assert (rules.VIEW in result.codes) is flagged
    assert result.in_scope is not flagged  # a real CXR: nothing else objects
    if flagged:
        assert f"(ViewPosition {view})" in result.message()
        assert "frontal (PA/AP)" in result.message()


def test_lateral_message_reads_as_specified(tmp_path, cxr_pixels):
    im = load_image(write_dicom(tmp_path / "lat.dcm", cxr_pixels, ViewPosition="LL"))
    assert check_image(im).message() == (
        "Lateral view (ViewPosition LL): the model accepts adult frontal (PA/AP) chest radiographs only.")


@pytest.mark.parametrize("part, flagged", [
    ("HAND", True), ("ABDOMEN", True), ("SKULL", True), ("KNEE", True), ("LSPINE", True),
    ("CHEST", False), ("THORAX", False), ("TORAX", False), ("PORT CHEST", False), ("LUNG", False),
    ("WHOLEBODY", False), (None, False),
])
def test_body_part(tmp_path, cxr_pixels, part, flagged):
    im = load_image(write_dicom(tmp_path / "b.dcm", cxr_pixels, BodyPartExamined=part))
    assert (rules.BODY_PART in check_image(im).codes) is flagged


def test_real_non_chest_body_parts_are_flagged(dicom_dir):
    for name, part in [("MR-SIEMENS-DICOM-WithOverlays.dcm", "ABDOMEN"), ("explicit_VR-UN.dcm", "PANCREAS"),
                       ("emri_small.dcm", "HEAD")]:
        result = check_image(load_image(dicom_dir / name))
        assert f"BodyPartExamined {part}" in next(r.message for r in result.reasons if r.code == rules.BODY_PART)


@pytest.mark.parametrize("age, flagged", [
    ("012Y", True), ("006M", True), ("010D", True), ("017Y", True), ("018Y", False), ("062Y", False),
    pytest.param("62", False, marks=pytest.mark.filterwarnings("ignore:Invalid value for VR AS")),
    (None, False),
])
def test_age_threshold(tmp_path, cxr_pixels, age, flagged):
    im = load_image(write_dicom(tmp_path / "a.dcm", cxr_pixels, PatientAge=age))
    assert (rules.AGE in check_image(im).codes) is flagged


def test_age_threshold_is_configurable(tmp_path, cxr_pixels):
    im = load_image(write_dicom(tmp_path / "a.dcm", cxr_pixels, PatientAge="012Y"))
    result = check_image(im)
    assert "12 years" in result.message() and "18 years" in result.message()
    assert check_image(im, ScopeSettings(min_age_years=10)).in_scope
    assert rules.AGE in check_image(im, ScopeSettings(min_age_years=21)).codes


def test_real_file_with_age_zero_is_flagged(dicom_dir):
    im = load_image(dicom_dir / "parametric_map_float.dcm")  # PatientAge 000Y
    assert rules.AGE in check_image(im).codes


# --------------------------------------------------------------------------- colour


def test_colour_files_are_flagged(dicom_dir):
    for name in ("SC_rgb.dcm", "US1_UNCR.dcm", "OBXXXX1A.dcm", "SC_ybr_full_uncompressed.dcm"):
        im = load_image(dicom_dir / name)
        assert im.rgb is not None
        assert rules.COLOUR in check_image(im).codes, name


def test_grey_stored_as_rgb_is_not_colour(cxr_dir):
    im = load_image(cxr_dir / "16747_3_1.jpg")  # 3-channel JPEG of a grey radiograph
    assert im.metadata["colour_source"] is True
    assert rules.COLOUR not in check_image(im).codes


def test_small_coloured_annotation_is_not_colour_but_a_colour_photo_is(tmp_path, cxr_pixels):
    rgb = np.repeat(cxr_pixels[..., None], 3, axis=2).copy()
    rgb[40:50, 40:60] = (255, 0, 0)  # a red marker on 0.08 % of the image
    Image.fromarray(rgb).save(tmp_path / "marked.png")
    marked = load_image(tmp_path / "marked.png")
    assert marked.rgb is not None
    assert check_image(marked).in_scope
    tinted = rgb.copy()
    tinted[..., 0] = np.clip(tinted[..., 0].astype(int) + 60, 0, 255)  # sepia-like tint everywhere
    Image.fromarray(tinted).save(tmp_path / "tinted.png")
    assert rules.COLOUR in check_image(load_image(tmp_path / "tinted.png")).codes


# --------------------------------------------------------------------------- geometry


def test_extreme_aspect_ratio(dicom_dir, cxr_dir):
    whole_body = load_image(dicom_dir / "JPEG-LL.dcm")  # 1024 x 256 NM whole-body scan
    result = check_image(whole_body)
    assert "4.0:1" in next(r.message for r in result.reasons if r.code == rules.ASPECT)
    wide = load_image(cxr_dir / "figure1" / "COVID-00020.jpg")  # real CXR, 844 x 480 (1.76:1)
    assert rules.ASPECT not in check_image(wide).codes
    assert rules.ASPECT in check_image(wide, ScopeSettings(max_aspect=1.5)).codes


def test_tiny_images(dicom_dir, cxr_dir):
    assert rules.TOO_SMALL in check_image(load_image(dicom_dir / "JLSL_08_07_0_1F.dcm")).codes  # 128 x 128
    small_cxr = load_image(cxr_dir / "figure1" / "COVID-00048.png")  # a real CXR at 224 x 224
    assert check_image(small_cxr).in_scope
    assert rules.TOO_SMALL in check_image(small_cxr, ScopeSettings(min_side=256)).codes


# --------------------------------------------------------------------------- settings, privacy, header


def test_disabled_rules_do_not_run(dicom_dir):
    im = load_image(dicom_dir / "US1_UNCR.dcm")
    full = check_image(im)
    assert {rules.MODALITY, rules.COLOUR} <= codes(full)
    only = ScopeSettings(enabled_rules=frozenset(RULE_CODES) - {rules.MODALITY, rules.COLOUR})
    assert codes(check_image(im, only)) == codes(full) - {rules.MODALITY, rules.COLOUR}


def test_settings_round_trip_and_bad_values_fall_back():
    s = ScopeSettings(allow_secondary_capture=True, min_age_years=16, min_side=300, max_aspect=2.5,
                      enabled_rules=frozenset({rules.MODALITY, rules.AGE}))
    assert ScopeSettings.from_dict(s.to_dict()) == s
    bad = ScopeSettings.from_dict({"min_age_years": "old", "min_side": -5, "max_aspect": float("nan"),
                                   "enabled_rules": ["modality_not_radiograph", "no_such_rule"], "x": 1})
    assert bad.min_age_years == 18 and bad.min_side == 224 and bad.max_aspect == 2.0
    assert bad.enabled_rules == frozenset({rules.MODALITY})
    assert ScopeSettings.from_dict(None) == ScopeSettings()


@pytest.mark.slow
def test_messages_never_contain_patient_names_or_ids(dicom_dir, cxr_dir, tmp_path, cxr_pixels):
    files = sorted(dicom_dir.glob("*.dcm")) + sorted(cxr_dir.glob("*.dcm"))
    files.append(write_dicom(tmp_path / "kid.dcm", cxr_pixels, ViewPosition="LL", PatientAge="004Y",
                             BodyPartExamined="HAND", Modality="CT"))
    checked = 0
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        secrets = [str(ds.get(k, "") or "") for k in ("PatientID", "PatientName")]
        secrets += [s.replace("^", " ") for s in secrets]
        secrets = [s.strip() for s in secrets if len(s.strip()) >= 3]
        try:
            im = load_image(path)
        except Exception:
            continue  # undecodable files are the loader's business (liver_rle.dcm)
        text = check_image(im).message() + check_info(probe(path)).message()
        for s in secrets:
            assert s not in text, path.name
        checked += 1
    assert checked >= 55


def test_result_text_helpers(tmp_path, cxr_pixels):
    im = load_image(write_dicom(tmp_path / "x.dcm", cxr_pixels, ViewPosition="LL", PatientAge="010Y"))
    result = check_image(im)
    assert result.codes == [rules.VIEW, rules.AGE]  # metadata rules in RULE_CODES order
    assert result.reason_codes() == f"{rules.VIEW};{rules.AGE}"
    assert result.summary().startswith("Out of scope: Lateral view") and result.summary().endswith("(+1 more)")
    assert check_image(load_image(write_dicom(tmp_path / "ok.dcm", cxr_pixels))).summary() == "In scope"


def test_hook_forms_for_screening_and_viewer(tmp_path, cxr_pixels):
    import functools
    import pickle

    lateral = load_image(write_dicom(tmp_path / "x.dcm", cxr_pixels, ViewPosition="LL"))
    frontal = load_image(write_dicom(tmp_path / "ok.dcm", cxr_pixels))
    hook = pickle.loads(pickle.dumps(functools.partial(scope_reason, settings=ScopeSettings(min_age_years=16))))
    assert hook(frontal) is None
    assert hook(lateral) == check_image(lateral).message().rstrip(".")
    assert learned_hook(LearnedScopeCheck.from_model({}, Card({}))) is None  # nothing to run


# --------------------------------------------------------------------------- learned check (maths)


def make_stats(rng: np.random.Generator, *, d: int = 2048, k: int = 8, classes: int = 2):
    comps, _ = np.linalg.qr(rng.standard_normal((d, k)))
    a = rng.standard_normal((k, k))
    cov = a @ a.T + k * np.eye(k)
    tensors = {
        "ood.pca_mean": rng.standard_normal(d).astype(np.float32),
        "ood.pca_components": comps.T.astype(np.float32),
        "ood.class_means": rng.standard_normal((classes, k)).astype(np.float32),
        "ood.precision": np.linalg.inv(cov).astype(np.float32),
    }
    return tensors, cov


class Card:
    def __init__(self, extra):
        self.extra = extra


def test_learned_distance_matches_an_independent_mahalanobis():
    import torch

    rng = np.random.default_rng(7)
    tensors, cov = make_stats(rng)
    check = LearnedScopeCheck.from_model({k: torch.from_numpy(v) for k, v in tensors.items()},
                                         Card({"ood": {"method": METHOD, "threshold": 3.0, "k": 8}}))
    assert check.enabled and "8 principal components" in check.status
    x = rng.standard_normal((5, 2048)) * 2
    z = (x - tensors["ood.pca_mean"].astype(np.float64)) @ tensors["ood.pca_components"].T.astype(np.float64)
    expected = []
    for zi in z:
        per_class = [np.sqrt(d @ np.linalg.solve(cov, d)) for d in zi - tensors["ood.class_means"].astype(np.float64)]
        expected.append(min(per_class))
    got = check.distance(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert check.distance(x[0]) == pytest.approx(expected[0], rel=1e-4)
    np.testing.assert_array_equal(check.is_unusual(x), np.asarray(expected) > 3.0)
    # a point at a class mean gets no caution; one far away gets one, with the distance and limit in it
    at_mean = tensors["ood.pca_mean"] + tensors["ood.class_means"][1] @ tensors["ood.pca_components"]
    assert check.distance(at_mean) == pytest.approx(0.0, abs=1e-3)
    assert check_learned(at_mean, check) is None
    far = at_mean + 50 * tensors["ood.pca_components"][0]
    caution = check_learned(far, check)
    assert isinstance(caution, Caution) and caution.code == rules.LEARNED
    assert caution.distance == pytest.approx(check.distance(far)) and caution.limit == 3.0
    assert f"{check.distance(far):.1f}" in caution.message and "limit 3.0" in caution.short
    assert CAUTION_MARK in caution.short and "interpret with care" in caution.message
    assert Caution.from_dict(caution.to_dict()) == caution and Caution.from_dict({"distance": "x"}) is None
    assert check_learned(far, check, ScopeSettings(enabled_rules=frozenset(RULE_CODES) - {rules.LEARNED})) is None
    after_model = learned_hook(check)
    assert after_model(at_mean) is None and after_model(far) == caution
    # a caution never makes an image out of scope: the verdict stays in scope and carries it
    verdict = ScopeResult(in_scope=True).with_caution(caution)
    assert verdict.in_scope and verdict.reasons == [] and verdict.caution == caution
    assert "caution" in verdict.summary() and CAUTION_MARK in verdict.summary()
    refused = ScopeResult.from_reasons([ScopeReason(rules.VIEW, "Lateral view.")]).with_caution(caution)
    assert not refused.in_scope and refused.caution == caution  # rules still refuse; the caution rides along


def test_learned_check_absent_or_broken_statistics_disable_it_clearly():
    rng = np.random.default_rng(1)
    tensors, _ = make_stats(rng)
    good = {"ood": {"method": METHOD, "threshold": 3.0, "k": 8}}
    off = LearnedScopeCheck.from_model({}, Card({}))
    assert not off.enabled and "no statistics" in off.status
    assert check_learned(np.zeros(2048), off) is None and off.is_unusual(np.zeros(2048)) is False
    with pytest.raises(RuntimeError):
        off.distance(np.zeros(2048))
    cases = {
        "missing ood.precision": ({k: v for k, v in tensors.items() if k != "ood.precision"}, good),
        "threshold": (tensors, {"ood": {"method": METHOD, "k": 8}}),
        "does not implement": (tensors, {"ood": {"method": "energy", "threshold": 1.0}}),
        "ood.precision has shape": ({**tensors, "ood.precision": np.eye(3)}, good),
        "k=4": (tensors, {"ood": {"method": METHOD, "threshold": 3.0, "k": 4}}),
        "NaN": ({**tensors, "ood.class_means": np.full((2, 8), np.nan)}, good),
        "card.extra": (tensors, {}),
    }
    for expected, (t, extra) in cases.items():
        check = LearnedScopeCheck.from_model(t, Card(extra))
        assert not check.enabled and expected in check.status, (expected, check.status)


# --------------------------------------------------------------------------- learned check (shared data)

NON_CHEST_SAMPLE = ("693_UNCR.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm", "OBXXXX1A.dcm", "JPEG-LL.dcm",
                    "MR-SIEMENS-DICOM-WithOverlays.dcm", "explicit_VR-UN.dcm", "SC_rgb.dcm", "eCT_Supplemental.dcm",
                    "gdcm-US-ALOKA-16.dcm", "emri_small.dcm", "liver.dcm", "JLSL_08_07_0_1F.dcm",
                    "parametric_map_float.dcm", "color-pl.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm")


def auroc(negatives, positives) -> float:
    neg, pos = np.asarray(negatives), np.asarray(positives)
    return float(np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :]))


@pytest.fixture(scope="module")
def fitted_model_file(tmp_path_factory, cxr_dir, dicom_dir):
    """A 64-px model whose feature statistics the training code fitted on real chest radiographs.

    The weights are random (no ImageNet weights offline), which is enough for the check's
    plumbing: file -> engine pooled features -> distance -> flag. Training uses every other
    figure1 image, validation (threshold) a few more; the rest are held out.
    """
    from cxr_desktop.inference.engine import EngineOptions, InferenceEngine
    from cxr_desktop.model.modelfile import save_model
    from cxr_desktop.model.weights import init_model
    from cxr_desktop.preprocess import preprocess_for_card
    from cxr_desktop.training.ood import fit_ood

    model, card = init_model(classes=["normal", "abnormal"], positive_class="abnormal", weights="none",
                             input_size=64, seed=0)
    engine = InferenceEngine(model, card, options=EngineOptions(backend="torch"))
    chest = real_cxr_paths(cxr_dir, dicom_dir)
    train, val, held_out = chest[0::2], chest[1::4], chest[3::4]

    def pooled(paths):
        x = np.stack([preprocess_for_card(load_image(p), card.preprocessing) for p in paths])
        return engine.run_batch(x).pooled

    tensors, info = fit_ood(pooled(train), np.arange(len(train)) % 2, pooled(val), n_classes=2, k=8)
    card.extra["ood"] = info
    path = tmp_path_factory.mktemp("scope-model") / "with-ood.safetensors"
    save_model(path, model, card, extra_tensors=tensors)
    return path, held_out, [dicom_dir / n for n in NON_CHEST_SAMPLE]


@pytest.mark.slow
def test_learned_check_agrees_with_the_training_engine(fitted_model_file):
    from cxr_desktop.model.modelfile import load_model
    from cxr_desktop.training import ood

    loaded = load_model(fitted_model_file[0])
    check = from_loaded(loaded)
    assert ood.METHOD == METHOD and check.enabled, check.status
    assert check.threshold == loaded.card.extra["ood"]["threshold"]
    x = np.random.default_rng(5).standard_normal((6, 2048)) * 0.1 + 0.3
    np.testing.assert_allclose(check.distance(x), ood.ood_distance(x, loaded.extra_tensors), rtol=1e-9)


@pytest.mark.slow
def test_learned_check_on_the_shared_data_cautions_non_chest_dicoms(fitted_model_file, tmp_path, monkeypatch):
    from cxr_desktop.inference.engine import EngineOptions, load_engine

    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path))
    path, held_out, others = fitted_model_file
    engine = load_engine(path, options=EngineOptions(backend="torch"))
    check = from_loaded(engine)

    def run(paths):
        results = [engine.predict(load_image(p), cam=False) for p in paths]
        return (np.array([check.distance(r.pooled) for r in results]),
                [check_learned(r.pooled, check) for r in results])

    d_chest, r_chest = run(held_out)
    d_other, r_other = run(others)
    assert auroc(d_chest, d_other) >= 0.9
    flagged_other = [r for r in r_other if r is not None]
    assert len(flagged_other) >= 0.8 * len(others)
    assert sum(r is not None for r in r_chest) <= 0.25 * len(held_out)
    assert all(isinstance(r, Caution) and r.code == rules.LEARNED and "interpret with care" in r.message
               for r in flagged_other)


@pytest.mark.slow
def test_demo_model_separates_chest_radiographs_from_other_dicoms(cxr_dir, dicom_dir, tmp_path, monkeypatch):
    """The shipped model's learned check on the shared data (skips until the demo model exists)."""
    from cxr_desktop.inference.engine import EngineOptions, load_engine
    from cxr_desktop.paths import default_model_path
    from cxr_desktop.preprocess import preprocess_for_card

    model_path = default_model_path()
    if not model_path.exists():
        pytest.skip(f"demonstration model not found at {model_path.name} (bundled once trained)")
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path))
    engine = load_engine(model_path, options=EngineOptions(backend="torch"))
    check = from_loaded(engine)
    if not check.enabled:
        pytest.skip(check.status)
    chest = real_cxr_paths(cxr_dir, dicom_dir)[::4]
    other = [dicom_dir / n for n in NON_CHEST_SAMPLE]

    def distances(paths):
        x = np.stack([preprocess_for_card(load_image(p), engine.card.preprocessing) for p in paths])
        return check.distance(engine.run_batch(x).pooled)

    assert auroc(distances(chest), distances(other)) >= 0.9
