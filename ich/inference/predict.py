"""`ich predict`: a trained model on new studies. A folder of CT DICOMs in; per-slice and per-series
probabilities, a Kaggle submission, the quarantine and an offline report out.

    python -m ich.inference.predict DICOM_DIR --models models --out OUT [--tta] [--threshold X] [--batch-size N] [--workers N]

The folder is searched recursively and file names do not matter. Every file's header is read first (in
parallel, no pixel data) to find its image ID, series (``SeriesInstanceUID``) and slice position
(``ImagePositionPatient[2]``); then whole series, a chunk at a time, are decoded and rendered by the preprocess
stage's own code and worker pool (:func:`ich.data.preprocess.process_many`: same windows, same resizing, same
timeouts and quarantine reasons), while the model predicts the chunk before. Memory stays flat however many
studies there are.

Image IDs: the file's name (without ``.dcm``) when it is an RSNA ID (``ID_<hex>``, as in Kaggle's
``stage_2_test/``), else its ``SOPInstanceUID`` when that is an RSNA ID or a valid DICOM UID (digits and dots,
at most 64 characters). A file with neither, a second file with an ID already taken, and a file without a
``SeriesInstanceUID`` are quarantined with the reason; untrusted header text never becomes a path.

Outputs (each written atomically) in ``OUT/``:

- ``slices.csv``: ``ID``, ``SeriesInstanceUID``, ``position_z``, one probability column per label (the final
  predictions: the sequence model's when the model folder has one), ``cnn_<label>`` (the CNN alone) when it
  has, and ``file`` (the path under DICOM_DIR); series after series, each in z order.
- ``series.csv``: one row per series: ``slices``, per label the series score (the highest slice probability)
  and ``<label>_flagged`` (slices at or above the label's threshold).
- ``submission.csv``: Kaggle's ``ID,Label`` with ``<ID>_<label>``, six rows per usable image. Quarantined
  images are not in it.
- ``quarantine.csv``: ``ID,reason,file`` for every file that could not be used (``ID`` empty when none was
  found).
- ``report.html`` (one offline page) and ``explanations/<ID>_<label>.png`` (Grad-CAM overlays), see
  :mod:`ich.reports.predict_page`; ``summary.json``: counts, thresholds and settings of the run.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd

from ich.data.context import series_order
from ich.core.errors import PipelineError
from ich.core.files import write_csv, write_json
from ich.core.ids import image_path
from ich.core.pool import TaskFailure, map_in_order
from ich.imaging.header import read_header
from ich.core.ids import is_valid_id
from ich.core.labels import LABELS, RSNA_ROW_ORDER
from ich.data.preprocess import process_many
from ich.imaging.windows import windows_from_params

if TYPE_CHECKING:
    from ich.inference.loading import LoadedModel
    from ich.inference.explain import Explainer

__all__ = [
    "OUTPUT_FILES",
    "DicomFile",
    "Scan",
    "is_dicom_uid",
    "image_id_for",
    "find_files",
    "read_file_header",
    "scan_folder",
    "plan_chunks",
    "RenderedChunk",
    "render_chunks",
    "Prediction",
    "predict_files",
    "series_table",
    "submission_table",
    "write_outputs",
    "run_predict",
    "check_model_folder",
    "load_model_folder",
    "positive_int",
    "non_negative_int",
    "probability",
    "build_parser",
    "main",
]

#: A DICOM UID (PS3.5 9.1): numeric components without leading zeros, separated by dots, at most 64 characters.
_DICOM_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")
_MAX_UID_LENGTH = 64
_QUARANTINE_COLUMNS = ["ID", "reason", "file"]
_SCAN_CHUNK = 64  # files per task of the header scan
#: The files a run writes in its output folder (besides ``explanations/``).
OUTPUT_FILES: tuple[str, ...] = ("slices.csv", "series.csv", "submission.csv", "quarantine.csv", "report.html", "summary.json")


def is_dicom_uid(value: object) -> bool:
    """True for a syntactically valid DICOM UID: digits and dots only, no empty or zero-padded component, at
    most 64 characters. Such a string is also a safe file name (no separator, never ``.`` or ``..``)."""
    return isinstance(value, str) and len(value) <= _MAX_UID_LENGTH and _DICOM_UID.fullmatch(value) is not None


def image_id_for(file_stem: str, sop_instance_uid: str) -> str | None:
    """The image ID of a file: its stem when that is an RSNA ID, else its ``SOPInstanceUID`` when that is an RSNA
    ID or a valid DICOM UID, else None (the file cannot be named safely)."""
    if is_valid_id(file_stem):
        return file_stem
    if is_valid_id(sop_instance_uid) or is_dicom_uid(sop_instance_uid):
        return sop_instance_uid
    return None


@dataclass(frozen=True)
class DicomFile:
    """One usable file of the folder: where it is, its image ID, and where it lies (patient, study, series, z in mm;
    NaN when the header has no position)."""

    path: str
    relative: str
    image_id: str
    patient_id: str
    study_uid: str
    series_uid: str
    position_z: float


@dataclass(frozen=True)
class Scan:
    """The folder after the header scan: the usable ``files`` in prediction order (series by UID, each in z
    order), the ``quarantine`` so far (``ID,reason,file``) and how many files were ``found``."""

    files: list[DicomFile]
    quarantine: pd.DataFrame
    found: int


def find_files(folder: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Every regular file under ``folder`` (recursively, symlinked folders not followed), sorted by path. Hidden
    files and folders (names starting with ``.``) and the folder ``exclude`` (the output folder, when it lies
    inside ``folder``) are skipped."""
    root = Path(folder)
    skip = Path(exclude).resolve() if exclude is not None else None
    found = []
    for directory, folders, names in os.walk(root):
        here = Path(directory)
        folders[:] = sorted(name for name in folders if not name.startswith(".") and (here / name).resolve() != skip)
        found.extend(here / name for name in names if not name.startswith(".") and (here / name).is_file())
    return sorted(found)


def read_file_header(path: str) -> dict[str, object] | str:
    """Read one file's header (:func:`ich.imaging.header.read_header`): a dict (``image_id``, ``patient_id``,
    ``study_uid``, ``series_uid``, ``position_z``) or the reason the file cannot be used. Never raises for anything
    in the file."""
    header = read_header(path)
    if isinstance(header, str):
        return header
    image_id = image_id_for(Path(path).name.removesuffix(".dcm"), header.sop_instance_uid)
    if image_id is None:
        what = "missing" if not header.sop_instance_uid else "not a valid DICOM UID"
        return f"no usable image ID: the file name is not an RSNA ID (ID_<hex>) and its SOPInstanceUID is {what}"
    series_uid = header.series_uid
    if not series_uid or len(series_uid) > _MAX_UID_LENGTH or not series_uid.isprintable():
        what = "missing" if not series_uid else "not a printable UID of at most 64 characters"
        return f"SeriesInstanceUID {what}: the slice cannot be placed in its series"
    return {
        "image_id": image_id,
        "patient_id": header.patient_id,
        "study_uid": header.study_uid,
        "series_uid": series_uid,
        "position_z": header.position_z,
    }


def _read_chunk(paths: list[str]) -> list[dict[str, object] | str]:
    return [read_file_header(path) for path in paths]


def _headers(paths: list[str], workers: int, progress: bool) -> Iterator[dict[str, object] | str]:
    """:func:`read_file_header` of every path, in order, in the worker pool of :mod:`ich.core.pool` (1: in this
    process). A chunk whose worker dies is read again one file a task, so only the culprit is quarantined."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc="scan", unit="file", mininterval=1.0, file=sys.stderr)
    chunks = [paths[start : start + _SCAN_CHUNK] for start in range(0, len(paths), _SCAN_CHUNK)]
    try:
        in_process = workers == 1 or len(chunks) < 2
        for chunk in map_in_order(_read_chunk, chunks, workers=workers, window=2 * workers, in_process=in_process):
            if isinstance(chunk, TaskFailure):
                singles = map_in_order(_read_chunk, ([path] for path in chunk.item), workers=1)
                chunk = [single.reason if isinstance(single, TaskFailure) else single[0] for single in singles]
            if bar is not None:
                bar.update(len(chunk))
            yield from chunk
    finally:
        if bar is not None:
            bar.close()


def scan_folder(folder: str | os.PathLike, workers: int = 0, exclude: str | os.PathLike | None = None, progress: bool = False) -> Scan:
    """Find every file under ``folder`` and read its header: the usable files in prediction order, and the others
    (not DICOM, no usable image ID, no series, an ID already taken by an earlier file) as quarantine rows.

    Raises:
        PipelineError: ``folder`` is not a folder, or none of its files is DICOM.
    """
    root = Path(folder)
    if not root.is_dir():
        raise PipelineError(f"The DICOM folder {str(root)!r} does not exist or is not a folder. Pass the folder that holds the .dcm files.")
    paths = find_files(root, exclude)
    headers = list(_headers([str(path) for path in paths], workers or os.cpu_count() or 1, progress))
    files: list[DicomFile] = []
    quarantine: list[dict[str, str]] = []
    first_file: dict[str, str] = {}
    dicom = 0
    for path, header in zip(paths, headers):
        relative = path.relative_to(root).as_posix()
        if isinstance(header, str):
            quarantine.append({"ID": "", "reason": header, "file": relative})
            continue
        dicom += 1
        image_id = str(header["image_id"])
        if image_id in first_file:
            quarantine.append({"ID": image_id, "reason": f"duplicate image ID: {first_file[image_id]} has it too and is used", "file": relative})
            continue
        first_file[image_id] = relative
        files.append(DicomFile(str(path), relative, image_id, str(header["patient_id"]), str(header["study_uid"]),
                               str(header["series_uid"]), float(header["position_z"])))  # type: ignore[arg-type]
    not_dicom = sum(reason.startswith("not a DICOM file") for reason in (entry["reason"] for entry in quarantine))
    if len(paths) - not_dicom == 0:
        raise PipelineError(
            f"No DICOM files found in {str(root)!r} ({len(paths)} files searched, recursively; hidden files skipped). "
            "Pass the folder that holds the CT slices (e.g. Kaggle's stage_2_test/)."
        )
    files.sort(key=lambda item: item.series_uid)
    order = series_order([item.series_uid for item in files], [item.position_z for item in files], [item.image_id for item in files])
    return Scan([files[index] for index in order], pd.DataFrame(quarantine, columns=_QUARANTINE_COLUMNS), len(paths))


def plan_chunks(series: Sequence[str], chunk_images: int) -> list[np.ndarray]:
    """Cut rows (grouped by series, as :func:`scan_folder` orders them) into chunks of whole series of about
    ``chunk_images`` rows: a chunk closes once it holds at least that many; a longer series is one chunk."""
    if chunk_images < 1:
        raise ValueError(f"chunk_images must be >= 1. Received: {chunk_images}")
    series = np.asarray(series, dtype=object)
    if len(series) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, series[1:] != series[:-1]])
    ends = np.r_[starts[1:], len(series)]
    chunks, begin = [], 0
    for end in ends:
        if end - begin >= chunk_images:
            chunks.append(np.arange(begin, end))
            begin = end
    if begin < len(series):
        chunks.append(np.arange(begin, len(series)))
    return chunks


@dataclass(frozen=True)
class RenderedChunk:
    """One chunk of :func:`render_chunks`: ``rows`` (indices into the scan's files) and, for those rendered,
    ``images`` ``(len(rendered), S, S, 3)`` uint8 RGB as the preprocess stage writes its PNGs; ``rendered`` are
    the rows that have an image, ``reasons`` why the others have none."""

    rows: np.ndarray
    rendered: np.ndarray
    images: np.ndarray
    reasons: dict[int, str]


def _stage_links(files: Sequence[DicomFile], folder: Path) -> list[str]:
    """Give every file a staging name ``ID_<row in hex>.dcm`` in ``folder`` (a symlink, else a hardlink, else a
    copy), so the preprocess code, which reads ``<dicom_dir>/<ID>.dcm``, reads files of any name and place."""
    names = []
    for row, item in enumerate(files):
        name = f"ID_{row:x}"
        target = image_path(folder, name, ".dcm")
        try:
            os.symlink(os.path.abspath(item.path), target)
        except OSError:
            try:
                os.link(item.path, target)
            except OSError:
                shutil.copyfile(item.path, target)
        names.append(name)
    return names


class _Renderer(threading.Thread):
    """Runs the preprocess worker pool in a thread, a chunk ahead of the model: while the caller predicts one
    chunk, the workers decode and render the next (``depth`` chunks wait at most, so memory stays flat)."""

    def __init__(self, files: Sequence[DicomFile], chunks: Sequence[np.ndarray], work: Path, image_size: int, windows: tuple,
                 rsna_pixel_fix: str, workers: int, file_timeout_s: float | None, depth: int = 2) -> None:
        super().__init__(name="ich-predict-render", daemon=True)
        self.files, self.chunks, self.work = files, chunks, work
        self.image_size, self.windows, self.rsna_pixel_fix = image_size, windows, rsna_pixel_fix
        self.workers, self.file_timeout_s = workers, file_timeout_s
        self.output: queue.Queue = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()

    def _put(self, item: object) -> bool:
        while not self.stopping.is_set():
            try:
                self.output.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        results = None
        try:
            dicom_dir, png_dir = self.work / "dicom", self.work / "png"
            dicom_dir.mkdir()
            names = _stage_links(self.files, dicom_dir)
            results = process_many(names, dicom_dir, png_dir, self.image_size, self.windows, self.workers,
                                   self.rsna_pixel_fix, self.file_timeout_s)
            for rows in self.chunks:
                rendered, images, reasons = [], [], {}
                for row in rows:
                    result = next(results)
                    if result.metadata is None:
                        reasons[int(row)] = str(result.reason)
                        continue
                    png = image_path(png_dir, names[row], ".png")
                    bgr = cv2.imread(str(png), cv2.IMREAD_COLOR)
                    png.unlink()
                    rendered.append(int(row))
                    images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                stack = np.stack(images) if images else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
                if not self._put(RenderedChunk(np.asarray(rows), np.asarray(rendered, dtype=np.int64), stack, reasons)):
                    return
        except BaseException as error:  # handed to the caller, which raises it in its own thread
            self._put(error)
        finally:
            if results is not None:
                results.close()  # stops the worker processes
            self._put(None)


def render_chunks(
    files: Sequence[DicomFile],
    chunks: Sequence[np.ndarray],
    image_size: int,
    windows: tuple,
    rsna_pixel_fix: str = "auto",
    workers: int = 0,
    file_timeout_s: float | None = 60.0,
) -> Iterator[RenderedChunk]:
    """Decode and render ``files`` chunk by chunk with the preprocess stage's code and worker pool
    (:func:`ich.data.preprocess.process_many`: a file that fails, hangs past ``file_timeout_s`` or kills its worker gets
    that stage's reason), one chunk ahead of the consumer, in the order of ``chunks``."""
    with tempfile.TemporaryDirectory(prefix="ich-predict-") as work:
        renderer = _Renderer(files, chunks, Path(work), image_size, windows, rsna_pixel_fix, workers, file_timeout_s)
        renderer.start()
        try:
            while True:
                item = renderer.output.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            renderer.stopping.set()
            renderer.join()


@dataclass
class Prediction:
    """What :func:`predict_files` found: ``slices`` (one row per predicted image, scan order: ``ID``, ``PatientID``,
    ``StudyInstanceUID``, ``SeriesInstanceUID``, ``position_z``, ``file``, the labels, ``cnn_<label>``), the
    ``quarantine`` (``ID,reason,file``) and whether the model has a sequence model (``sequence``)."""

    slices: pd.DataFrame
    quarantine: pd.DataFrame
    sequence: bool
    counts: dict[str, int] = field(default_factory=dict)


def predict_files(
    model: LoadedModel,
    scan: Scan,
    *,
    tta: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    chunk_images: int = 256,
    file_timeout_s: float | None = 60.0,
    progress: bool = False,
    on_chunk: Callable[[pd.DataFrame, np.ndarray], None] | None = None,
) -> Prediction:
    """Render and predict every file of ``scan``, whole series at a time (:meth:`LoadedModel.predict_slices`).

    Args:
        on_chunk: called after each chunk with its predicted rows (the columns of :attr:`Prediction.slices`) and
            their rendered images, in the same order (the report keeps what it needs of them).
    """
    windows = windows_from_params(model.card["windows"])
    rsna_pixel_fix = str(model.card.get("rsna_pixel_fix", "auto"))
    files = scan.files
    chunks = plan_chunks([item.series_uid for item in files], chunk_images)
    frames: list[pd.DataFrame] = []
    quarantine: list[dict[str, str]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="predict", unit="img", mininterval=1.0, file=sys.stderr)
    try:
        for chunk in render_chunks(files, chunks, model.image_size, windows, rsna_pixel_fix, workers, file_timeout_s):
            for row, reason in chunk.reasons.items():
                quarantine.append({"ID": files[row].image_id, "reason": reason, "file": files[row].relative})
            if len(chunk.rendered):
                chosen = [files[row] for row in chunk.rendered]
                series = [item.series_uid for item in chosen]
                positions = [item.position_z for item in chosen]
                ids = [item.image_id for item in chosen]
                predicted = model.predict_slices(chunk.images, series, positions, ids, batch_size=batch_size, tta=tta)
                frame = pd.DataFrame({
                    "ID": ids,
                    "PatientID": [item.patient_id for item in chosen],
                    "StudyInstanceUID": [item.study_uid for item in chosen],
                    "SeriesInstanceUID": series,
                    "position_z": positions,
                    "file": [item.relative for item in chosen],
                })
                for index, label in enumerate(LABELS):
                    frame[label] = predicted.final[:, index]
                for index, label in enumerate(LABELS):
                    frame[f"cnn_{label}"] = predicted.cnn[:, index]
                frames.append(frame)
                if on_chunk is not None:
                    on_chunk(frame, chunk.images)
            if bar is not None:
                bar.update(len(chunk.rows))
    finally:
        if bar is not None:
            bar.close()
    columns = ["ID", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "position_z", "file", *LABELS, *(f"cnn_{label}" for label in LABELS)]
    slices = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    rendering = pd.DataFrame(quarantine, columns=_QUARANTINE_COLUMNS)
    counts = {"files_found": scan.found, "images_predicted": len(slices), "series": int(slices["SeriesInstanceUID"].nunique()),
              "quarantined": len(scan.quarantine) + len(rendering)}
    return Prediction(slices, pd.concat([scan.quarantine, rendering], ignore_index=True), model.sequence is not None, counts)


def series_table(slices: pd.DataFrame, thresholds: dict[str, float]) -> pd.DataFrame:
    """One row per series (in order of first appearance): ``SeriesInstanceUID``, ``slices``, and per label the
    series score ``<label>`` (the highest probability of its slices) and ``<label>_flagged`` (how many of its
    slices reach ``thresholds[label]``)."""
    groups = slices.groupby("SeriesInstanceUID", sort=False)
    table = pd.DataFrame({"SeriesInstanceUID": list(groups.groups), "slices": groups.size().to_numpy()})
    for label in LABELS:
        table[label] = groups[label].max().to_numpy()
        table[f"{label}_flagged"] = groups[label].apply(lambda values, cut=thresholds[label]: int((values >= cut).sum())).to_numpy()
    return table


def submission_table(slices: pd.DataFrame) -> pd.DataFrame:
    """Kaggle's ``ID,Label``: ``<ID>_<label>`` and its probability, six rows per image in RSNA's row order."""
    ids = np.repeat(slices["ID"].to_numpy(dtype=object), len(RSNA_ROW_ORDER))
    labels = np.tile(np.array(RSNA_ROW_ORDER, dtype=object), len(slices))
    values = slices[list(RSNA_ROW_ORDER)].to_numpy(dtype=np.float64).reshape(-1)
    return pd.DataFrame({"ID": ids + "_" + labels, "Label": values})


def _thresholds(card: dict[str, Any], threshold: float | None) -> dict[str, float]:
    """One threshold for every label when given, else the card's per-label thresholds (0.5 where it has none)."""
    if threshold is not None:
        return {label: float(threshold) for label in LABELS}
    tuned = card.get("thresholds") or {}
    return {label: float(tuned.get(label, 0.5)) for label in LABELS}


def write_outputs(out: Path, prediction: Prediction, thresholds: dict[str, float]) -> pd.DataFrame:
    """``slices.csv``, ``series.csv``, ``submission.csv`` and ``quarantine.csv`` (see the module docstring); returns
    the series table."""
    slices = prediction.slices
    columns = ["ID", "SeriesInstanceUID", "position_z", *LABELS]
    if prediction.sequence:
        columns += [f"cnn_{label}" for label in LABELS]
    series = series_table(slices, thresholds)
    write_csv(slices[[*columns, "file"]], out / "slices.csv")
    write_csv(series, out / "series.csv")
    write_csv(submission_table(slices), out / "submission.csv")
    write_csv(prediction.quarantine, out / "quarantine.csv")
    return series


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more. Received: {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1]. Received: {text}")
    return value


def build_parser(prog: str = "python -m ich.inference.predict") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Predict intracranial hemorrhage on a folder of head-CT DICOMs with a trained model. Research use only.")
    parser.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder of DICOM files (searched recursively; any file names)")
    parser.add_argument("--models", default="models", help="trained model folder (with model.json); default: models")
    parser.add_argument("--out", required=True, help="output folder (created; existing outputs of a previous run are replaced)")
    parser.add_argument("--tta", action="store_true", help="average each image with its horizontal mirror")
    parser.add_argument("--threshold", type=probability, default=None,
                        help="one decision threshold for every label (default: the model card's per-label thresholds, tuned on validation)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per model batch (default 64)")
    parser.add_argument("--workers", type=non_negative_int, default=0, help="processes reading and rendering DICOMs; 0 = all cores (default)")
    parser.add_argument("--chunk-images", type=positive_int, default=256, help="images (whole series) rendered and predicted at a time (default 256)")
    parser.add_argument("--file-timeout-s", type=float, default=60.0, help="a file taking longer to decode is quarantined (default 60)")
    parser.add_argument("--explain", action=argparse.BooleanOptionalAction, default=True, help="Grad-CAM overlays of flagged slices in the report (default on)")
    parser.add_argument("--explain-slices", type=non_negative_int, default=3, help="flagged slices per series that get Grad-CAM maps (default 3)")
    parser.add_argument("--report-series", type=non_negative_int, default=50,
                        help="series shown in full in report.html, those with the highest P(any) (default 50; every series is in its table)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def check_model_folder(models: str | os.PathLike) -> Path:
    folder = Path(models)
    if not (folder / "model.json").is_file():
        raise PipelineError(
            f"Model folder {str(folder)!r} not found or without model.json. Pass --models with the folder `dvc repro train` writes (models/)."
        )
    return folder


def load_model_folder(models: str | os.PathLike) -> LoadedModel:
    """:func:`ich.inference.loading.load_models`, its problems as one-line errors (TensorFlow is imported here, not before)."""
    folder = check_model_folder(models)
    from ich.inference.loading import load_models

    try:
        return load_models(folder)
    except (ValueError, KeyError, OSError) as error:
        raise PipelineError(f"Could not load the model folder {str(folder)!r}: {error}") from error


def run_predict(args: argparse.Namespace, explainer_factory: Callable[[LoadedModel], Explainer] | None = None) -> dict[str, object]:
    """The command's work after parsing (see the module docstring); returns the summary written to ``summary.json``.

    Raises:
        PipelineError: no DICOM files, no model folder, or not one usable image.
    """
    from ich.reports.predict_page import ReportCollector, write_predict_report

    if args.file_timeout_s is not None and not args.file_timeout_s > 0:
        raise PipelineError(f"--file-timeout-s must be > 0 seconds. Received: {args.file_timeout_s}")
    out = Path(args.out)
    models_dir = check_model_folder(args.models)  # before the scan: a wrong folder fails at once
    scan = scan_folder(args.dicom_dir, args.workers, exclude=out, progress=not args.no_progress)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:  # a previous run's outputs must not pass for this run's if it stops early
        (out / name).unlink(missing_ok=True)
    model = load_model_folder(args.models)
    thresholds = _thresholds(model.card, args.threshold)
    explainer = None
    if args.explain and args.explain_slices > 0 and args.report_series > 0:
        from ich.inference.explain import gradcam_explainer  # TensorFlow's Grad-CAM: imported only when maps are made
        explainer = (explainer_factory or gradcam_explainer)(model)
    collector = ReportCollector(model, thresholds, args.report_series, args.explain_slices, explainer)
    prediction = predict_files(
        model, scan, tta=args.tta, batch_size=args.batch_size, workers=args.workers, chunk_images=args.chunk_images,
        file_timeout_s=args.file_timeout_s, progress=not args.no_progress, on_chunk=collector.add,
    )
    if prediction.slices.empty:
        write_csv(prediction.quarantine, out / "quarantine.csv")
        reasons = Counter(prediction.quarantine["reason"]).most_common(3)
        raise PipelineError(
            f"None of the {scan.found} files under {str(args.dicom_dir)!r} could be used. Most common: "
            + "; ".join(f"{count} x {reason}" for reason, count in reasons)
            + f". Every file and its reason is in {out / 'quarantine.csv'}."
        )
    series = write_outputs(out, prediction, thresholds)
    summary = {
        **prediction.counts,
        "models": str(models_dir),
        "arch": model.card.get("arch"),
        "image_size": model.image_size,
        "sequence_model": prediction.sequence,
        "tta": bool(args.tta),
        "thresholds": thresholds,
        "thresholds_from": "--threshold" if args.threshold is not None else "model card (tuned on validation)",
        "explanations": explainer is not None,
    }
    write_predict_report(out, collector, series, prediction.quarantine, thresholds, summary)
    write_json(summary, out / "summary.json")
    return summary


def main(argv: Sequence[str] | None = None, prog: str = "python -m ich.inference.predict") -> None:
    """The command line (see the module docstring): errors a user can fix print one line and exit 1."""
    from ich.core.runner import run_stage

    args = build_parser(prog).parse_args(argv)
    # Series of different lengths give batches of different shapes; TensorFlow's notes on retracing them are noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    def work() -> None:
        summary = run_predict(args)
        print(
            f"predicted {summary['images_predicted']} images in {summary['series']} series; {summary['quarantined']} files "
            f"quarantined; outputs in {args.out}",
            file=sys.stderr,
        )

    run_stage(work)


if __name__ == "__main__":
    main()
