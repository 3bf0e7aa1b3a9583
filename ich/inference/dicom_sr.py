"""``ich predict --dicom-sr``: one DICOM Structured Report per series, which a radiology workstation or PACS reads.

Each report is a Comprehensive 3D SR (highdicom) holding a TID 1500 Measurement Report placed in the source study
(the patient and study attributes are copied from the series' first slice). Its content, per label, is one
measurement group (TID 1501) with:

- tracking identifier: the label's name (``any``, ``epidural``, ...); finding type: SNOMED CT 1386000
  "Intracranial hemorrhage" for ``any``, the local scheme ``99ICH`` (code value = label) for the subtypes;
- a measurement DCM 122157 "Probability" in UCUM ``{probability}``: the series score of ``series.csv``
  (the highest slice probability), its exact float in FloatingPointValue;
- a qualitative evaluation DCM 121052 "Presence of property": SNOMED CT "Present" when the series has a slice at
  or above the label's threshold (``<label>_flagged`` > 0 in ``series.csv``), else "Absent";
- source images: the label's key slices (``series.csv``'s ``<label>_key_slices``, highest first);
- algorithm identification: the model (card ``arch``), ich's version, and as parameters the label's threshold and
  the training run's ``git_revision`` and ``data_hash`` when the model card records them.

The ``any`` group also carries ``99ICH ood`` "Outside the training distribution" (Present/Absent) when
``series.csv`` has an :data:`OOD_COLUMN` column; without one it is left out. The device observer is
``ich predict`` with the model's name; its UID is derived from the model's identity, so reports of one model
share it. Every predicted slice of the series is listed in the CurrentRequestedProcedureEvidenceSequence with
its own SOP Class and Instance UIDs (re-read from each file's header, no pixel data). UIDs are copied as the
sources hold them (RSNA's anonymised ``ID_...`` values are not valid UIDs; a reader matches them as text).

Files are ``OUT/sr/series_0001.dcm``, ... numbered in the order of ``series.csv``; no header text ever becomes a
path. A series whose report cannot be made (a header without the UIDs a reference needs, a file gone) is listed
with the reason and the run goes on. Memory: the headers of one series at a time.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import highdicom as hd
import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, TM

from ich.core.files import atomic_write_bytes
from ich.core.labels import ANY, LABELS
from ich.imaging.header import values_unchecked
from ich.inference.ood import OOD_COLUMN  # the ``series.csv`` column (bool) of the out-of-distribution flag
from ich.inference.outputs import SR_FOLDER

if TYPE_CHECKING:
    from ich.models.card import ModelCard

__all__ = ["SR_FOLDER", "OOD_COLUMN", "LOCAL_SCHEME", "ModelIdentity", "sr_file_name", "series_report", "write_series_reports"]

#: The coding scheme of this project's own concepts (PS3.16 8.2: a designator starting "99" is local).
LOCAL_SCHEME = "99ICH"
PROBABILITY_UNIT = hd.sr.CodedConcept("{probability}", "UCUM", "probability")
OOD_CONCEPT = hd.sr.CodedConcept("ood", LOCAL_SCHEME, "Outside the training distribution")
_SERIES_NUMBER = 990  # the report's own series, apart from the scanner's
_SOURCE_TAGS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
#: Patient and study attributes copied from the first slice; Type 2 ones are empty when the slice lacks them.
_PATIENT_STUDY = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_OPTIONAL = ("SpecificCharacterSet", "PatientAge", "StudyDescription", "IssuerOfPatientID")
_PATIENT_SEXES = ("M", "F", "O")  # highdicom refuses any other value: anything else (and a malformed date or time) is left empty


@dataclass(frozen=True)
class ModelIdentity:
    """Who made the predictions: the model's name (card ``arch``), ich's version, and the training run's git
    revision and data hash (None when the card does not record them)."""

    name: str
    version: str
    git_revision: str | None = None
    data_hash: str | None = None

    @classmethod
    def from_card(cls, card: ModelCard) -> ModelIdentity:
        try:
            package = version("ich")
        except PackageNotFoundError:
            package = "unknown"
        revision, data_hash = getattr(card, "git_revision", None), getattr(card, "data_hash", None)
        return cls(card.arch, package, None if revision is None else str(revision), None if data_hash is None else str(data_hash))

    @property
    def device_uid(self) -> str:
        """A UID of this model and version (the same for every report it makes)."""
        return generate_uid(entropy_srcs=[self.name, self.version, self.git_revision or "", self.data_hash or ""])


def sr_file_name(number: int) -> str:
    """``series_0001.dcm`` for the first series (``number`` from 1): the only way a report's file is named."""
    if number < 1:
        raise ValueError(f"number must be 1 or more. Received: {number}")
    return f"series_{number:04d}.dcm"


def _finding(label: str) -> hd.sr.CodedConcept:
    if label == ANY:
        return hd.sr.CodedConcept.from_code(codes.SCT.IntracranialHemorrhage)
    return hd.sr.CodedConcept(label, LOCAL_SCHEME, f"{label.capitalize()} hemorrhage")


def _presence(present: bool) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept.from_code(codes.SCT.Present if present else codes.SCT.Absent)


@contextlib.contextmanager
def _uids_as_they_are() -> Iterator[None]:
    """pydicom's value checks off while the report is built and written: it copies the sources' UIDs, RSNA's
    invalid ones included, exactly (a warning per element otherwise)."""
    settings = pydicom.config.settings
    mode = settings.writing_validation_mode
    settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        with values_unchecked():
            yield
    finally:
        settings.writing_validation_mode = mode


def _read_source(path: Path, full: bool) -> Dataset:
    """A slice's header, no pixel data: the four UIDs of a reference, and with ``full`` the patient and study
    attributes too (missing Type 2 ones set empty).

    Raises:
        ValueError: a UID a reference needs is missing or empty.
    """
    tags = None if full else list(_SOURCE_TAGS)
    header = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=tags)
    source = Dataset()
    for keyword in _SOURCE_TAGS:
        value = str(header.get(keyword, "") or "").strip()
        if not value:
            raise ValueError(f"{path.name} has no {keyword}: the report cannot reference it")
        setattr(source, keyword, value)
    if full:
        for keyword in (*_PATIENT_STUDY, *_OPTIONAL):
            if keyword in header and header[keyword].value is not None:
                setattr(source, keyword, header[keyword].value)
            elif keyword in _PATIENT_STUDY:
                setattr(source, keyword, "")
        if str(source.PatientSex).strip() not in _PATIENT_SEXES:
            source.PatientSex = ""
        for keyword, kind in (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM)):
            try:  # highdicom parses these; a malformed one is left empty rather than costing the report
                kind(getattr(source, keyword))
            except (ValueError, TypeError):
                setattr(source, keyword, "")
    return source


def series_report(
    sources: list[Dataset],
    ids: list[str],
    row: Mapping[str, Any],
    thresholds: Mapping[str, float],
    model: ModelIdentity,
) -> hd.sr.Comprehensive3DSR:
    """The report of one series (see the module docstring).

    Args:
        sources: per predicted slice, a dataset with its four UIDs (the first also with the patient and study
            attributes), in the order of ``ids``, the slices' image IDs.
        row: the series' row of ``series.csv``: ``<label>``, ``<label>_flagged``, ``<label>_key_slices`` (when
            key slices were chosen) and :data:`OOD_COLUMN` (when present).
    """
    by_id = dict(zip(ids, sources))
    out_of_distribution = row.get(OOD_COLUMN)
    groups = []
    for label in LABELS:
        evaluations = [hd.sr.QualitativeEvaluation(codes.DCM.PresenceOfProperty, _presence(int(row[f"{label}_flagged"]) > 0))]
        if label == ANY and out_of_distribution is not None and not pd.isna(out_of_distribution):
            evaluations.append(hd.sr.QualitativeEvaluation(OOD_CONCEPT, _presence(bool(out_of_distribution))))
        parameters = [f"threshold={thresholds[label]}"]
        parameters += [
            f"{name}={value}" for name, value in (("git_revision", model.git_revision), ("data_hash", model.data_hash)) if value
        ]
        key_ids = str(row.get(f"{label}_key_slices", "") or "").split()
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label),
                finding_type=_finding(label),
                algorithm_id=hd.sr.AlgorithmIdentification(name=model.name, version=model.version, parameters=parameters),
                measurements=[hd.sr.Measurement(codes.DCM.Probability, float(row[label]), PROBABILITY_UNIT)],
                qualitative_evaluations=evaluations,
                source_images=[
                    hd.sr.SourceImageForMeasurementGroup(by_id[key].SOPClassUID, by_id[key].SOPInstanceUID) for key in key_ids
                ]
                or None,
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=model.device_uid, name="ich predict", manufacturer_name="ich", model_name=model.name
        ),
    )
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTHeadReport,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=sources,
        content=content,
        series_instance_uid=hd.UID(),
        series_number=_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="ich",
        manufacturer_model_name=model.name,
        software_versions=model.version,
        series_description="ICH predictions (research use only)",
        is_complete=True,
    )


def write_series_reports(
    out: Path,
    dicom_dir: str | os.PathLike,
    slices: pd.DataFrame,
    series: pd.DataFrame,
    thresholds: Mapping[str, float],
    model: ModelIdentity,
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Write ``out/sr/series_NNNN.dcm`` for every row of ``series`` (the table of ``series.csv``); ``slices`` is
    the run's slice table (``ID``, ``SeriesInstanceUID``, ``file`` relative to ``dicom_dir``).

    Returns:
        the reports written (``file`` relative to ``out``, ``SeriesInstanceUID``, ``SOPInstanceUID`` of the
        report) and the series without one (``SeriesInstanceUID``, ``reason``).
    """
    folder = out / SR_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rows_of = slices.groupby("SeriesInstanceUID", sort=False).indices
    written: list[dict[str, str]] = []
    failures: list[dict[str, str]] = []
    for number, row in enumerate(series.to_dict("records"), start=1):
        series_uid = str(row["SeriesInstanceUID"])
        chosen = slices.iloc[rows_of[series_uid]]
        try:
            with _uids_as_they_are():
                sources = [
                    _read_source(Path(dicom_dir) / str(file), full=index == 0) for index, file in enumerate(chosen["file"])
                ]
                report = series_report(sources, [str(value) for value in chosen["ID"]], row, thresholds, model)
                buffer = io.BytesIO()
                report.save_as(buffer, enforce_file_format=True)
            name = sr_file_name(number)
            atomic_write_bytes(folder / name, buffer.getvalue())
        except Exception as error:  # one series' report must not cost the others, nor the run
            failures.append({"SeriesInstanceUID": series_uid, "reason": f"{type(error).__name__}: {error}"})
            continue
        written.append(
            {"file": f"{SR_FOLDER}/{name}", "SeriesInstanceUID": series_uid, "SOPInstanceUID": str(report.SOPInstanceUID)}
        )
    return written, failures
