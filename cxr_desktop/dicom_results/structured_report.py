"""The Structured Report result: a TID 1500 Measurement Report (highdicom Comprehensive 3D SR).

One measurement group (TID 1501) about the whole image:

- finding type: the model's finding (positive) class (private code, scheme ``99CXRREVIEW``);
- measurements: P(finding) (UCUM ``1``) and the decision threshold, when the image was scored;
- qualitative evaluations: threshold exceeded (yes/no), within the model's intended use (yes/no),
  unusual image (yes/no: the learned caution);
- algorithm identification: model name, version, and parameters (file sha256, threshold, CAM method);
- source image: the radiograph (also the SR's evidence);
- comments (TEXT): out-of-scope reasons, the caution sentence, "Decision aid - not a diagnosis".

Patient and study attributes come from the source through highdicom (the IOD's
Patient and General Study modules need them); nothing else is copied. UIDs are
derived like the Secondary Capture's (re-export gives the same SR).
"""

from __future__ import annotations

import warnings
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from cxr_desktop.dicom_results.finding import DECISION_AID_SHORT, ImageFinding, ModelInfo
from cxr_desktop.dicom_results.secondary_capture import MANUFACTURER, _finish_common, result_uid, series_uid

SR_SERIES_NUMBER = 9902
SR_SERIES_DESCRIPTION = "CXR Review AI report - decision aid, not diagnosis"  # LO: at most 64 characters
OPTIONAL_PATIENT_STUDY = ("PatientAge", "PatientSize", "PatientWeight")
SCHEME = "99CXRREVIEW"  # private coding scheme of this app (PS3.16 8.2: "99" prefix)


def _codes() -> dict[str, object]:
    from highdicom.sr import CodedConcept

    return {
        "probability": CodedConcept("CXR001", SCHEME, "Probability of finding"),
        "threshold": CodedConcept("CXR002", SCHEME, "Decision threshold"),
        "exceeded": CodedConcept("CXR003", SCHEME, "Decision threshold reached"),
        "in_scope": CodedConcept("CXR004", SCHEME, "Within the model's intended use"),
        "unusual": CodedConcept("CXR005", SCHEME, "Unusual image - interpret with care"),
        "unit": CodedConcept("1", "UCUM", "no units"),
        "yes": CodedConcept("373066001", "SCT", "Yes"),
        "no": CodedConcept("373067005", "SCT", "No"),
        "comment": CodedConcept("121106", "DCM", "Comment"),
        "procedure": CodedConcept("399208008", "SCT", "Plain chest X-ray"),
    }


def finding_code(class_name: str) -> object:
    from highdicom.sr import CodedConcept

    value = "".join(ch if ch.isalnum() else "_" for ch in class_name.upper())[:16] or "FINDING"
    return CodedConcept(value, SCHEME, class_name[:64] or "Finding")


def report_comments(finding: ImageFinding) -> list[str]:
    """The TEXT items: out-of-scope reasons, the caution, the decision-aid notice."""
    out = []
    if not finding.in_scope:
        out.append(f"Out of scope ({finding.reason_codes or 'see reasons'}): {finding.reason_text}".strip())
        out.append("Scored on request; the score is not reliable for this image." if finding.scored
                   else "Not scored: the model is meant for adult frontal chest radiographs.")
    if finding.caution is not None:
        out.append(finding.caution.message)
    out.append(f"{DECISION_AID_SHORT}. A qualified reader must review the image.")
    return out


def _source_images(cls: Any, source: Dataset) -> list[Any] | None:
    """The group's source image; None where highdicom refuses the source as one (a SEG, an SR: out of
    scope anyway) - the SR's evidence still references it."""
    try:
        return [cls.from_source_image(source)]
    except ValueError:
        return None


def make_structured_report(source: Dataset, finding: ImageFinding, model: ModelInfo) -> Dataset:
    """The Comprehensive 3D SR (TID 1500) about ``source``, in a new series of its study."""
    import highdicom as hd
    from highdicom.sr import (
        AlgorithmIdentification, DeviceObserverIdentifyingAttributes, Measurement, MeasurementReport,
        MeasurementsAndQualitativeEvaluations, ObservationContext, ObserverContext, QualitativeEvaluation,
        SourceImageForMeasurementGroup, TextContentItem, TrackingIdentifier,
    )
    from pydicom.sr.codedict import codes

    c = _codes()
    algorithm = AlgorithmIdentification(
        name=model.name[:64], version=model.version[:64],
        parameters=[f"file_sha256={model.sha256 or 'unknown'}", f"decision_threshold={model.threshold:.6g}",
                    f"finding_class={model.positive_class}", f"heatmap={model.cam_method}"],
    )
    measurements = []
    evaluations = []
    if finding.scored:
        measurements = [
            Measurement(name=c["probability"], value=float(finding.score), unit=c["unit"],  # type: ignore[arg-type]
                        algorithm_id=algorithm),
            Measurement(name=c["threshold"], value=float(model.threshold), unit=c["unit"]),
        ]
        evaluations.append(QualitativeEvaluation(c["exceeded"], c["yes"] if finding.above_threshold else c["no"]))
    evaluations.append(QualitativeEvaluation(c["in_scope"], c["yes"] if finding.in_scope else c["no"]))
    evaluations.append(QualitativeEvaluation(c["unusual"], c["yes"] if finding.caution is not None else c["no"]))
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=result_uid(source, model, "sr-group"),
                                               identifier="CXR Review finding"),
        finding_type=finding_code(model.positive_class),
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
        source_images=_source_images(SourceImageForMeasurementGroup, source),
    )
    container = group[0]
    for text in report_comments(finding):
        container.ContentSequence.append(TextContentItem(name=c["comment"], value=text[:10240],
                                                         relationship_type="CONTAINS"))
    observer = ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=result_uid(source, model, "device"), name="CXR Review", manufacturer_name=MANUFACTURER,
            model_name=model.display_name[:64]),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=c["procedure"],
        imaging_measurements=[group],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom's person-name style hints on source values
        sr = hd.sr.Comprehensive3DSR(
            evidence=[source], content=report[0],
            series_instance_uid=series_uid(source, model, "sr"), series_number=SR_SERIES_NUMBER,
            sop_instance_uid=result_uid(source, model, "sr"), instance_number=int(source.get("InstanceNumber") or 1),
            manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
            series_description=SR_SERIES_DESCRIPTION,
        )
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    _finish_common(sr, model)
    for keyword in OPTIONAL_PATIENT_STUDY:  # Type 3, not needed by the IOD: not copied (and may be malformed)
        if keyword in sr:
            delattr(sr, keyword)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "CXR Review result codes"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr
