"""A synthetic data set of RSNA 2019 size (752,803 slices, 21,745 series, 18,939 patients) in the Kaggle layout,
written fast enough to benchmark the pipeline at full size.

Produces ``ROOT/stage_2_train/<ID>.dcm`` (one small CT Image Storage DICOM per slice) and ``ROOT/stage_2_train.csv``
(RSNA's long format: header ``ID,Label``, six rows ``ID_<hex>_<label>,<0|1>`` per image, in Kaggle's label
order). The structure follows RSNA's:

- about 15 % of the patients have two series (each its own StudyInstanceUID and SeriesInstanceUID);
- slices per series vary around ``images / series`` (24-46 at RSNA's ratio), adjusted to exactly ``images``;
- a series' slices lie 5 mm apart along z (x and y fixed), their IDs random, so file order is shuffled
  against z; there is no InstanceNumber;
- IDs as RSNA writes them: images ``ID_`` + 9 hex digits, patients ``ID_`` + 8, studies and series ``ID_`` + 10;
- about 40 % of the series bleed; a bleeding series has one contiguous run of positive slices, covered by a
  primary subtype, with other subtypes on shorter runs inside it (``any`` is the OR of the subtypes), so the
  slice-level prevalence matches RSNA stage 1 (any 14.4 %, epidural 0.41 %, intraparenchymal 4.8 %,
  intraventricular 3.5 %, subarachnoid 4.8 %, subdural 6.3 %);
- pixel encodings mixed as RSNA's: signed 16-bit and 12-bit unsigned with intercept -1024, and a few % of
  series stored 12-bit with wrap-around and intercept 0 (the ones the RSNA pixel fix repairs); a fifth of the
  series carry multi-valued window elements;
- one corrupt file (PixelData cut to a third, as RSNA's ID_6431af929) and one image with CSV rows but no file.

Pixels are a head-shaped ellipse (brain ~40 HU, bone rim ~1000 HU, air -1000 HU, mild noise), with a ~70 HU
blob on bleeding slices, taken from a small pool of precomputed slices. Each header is encoded once per
encoding by :func:`ich.data.synth._dicom_bytes` with placeholder IDs and z of the final byte lengths; every file
is that template with its IDs, z and pixel block patched in. All random draws are made up front from ``seed``
(:func:`plan_rsna_size_set`), so the output is the same for any number of workers.

Full RSNA size at 64 px (about 6.7 GB), with the default two worker processes::

    python -m benchmarks.rsna_data /tmp/rsna-size

A smaller set (``--series`` and ``--patients`` default to RSNA's ratios to ``--images``)::

    python -m benchmarks.rsna_data /tmp/rsna-20k --images 20000 --workers 2
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ich.core.labels import ANY, RSNA_ROW_ORDER, SUBTYPES
from ich.data.synth import _dicom_bytes

__all__ = ["RSNA_IMAGES", "RSNA_SERIES", "RSNA_PATIENTS", "PREVALENCE", "RsnaPlan", "plan_rsna_size_set", "write_rsna_size_set"]

RSNA_IMAGES = 752_803
RSNA_SERIES = 21_745
RSNA_PATIENTS = 18_939

#: Slice-level prevalence of RSNA 2019 stage 1 training labels.
PREVALENCE: dict[str, float] = {
    "epidural": 0.0041,
    "intraparenchymal": 0.048,
    "intraventricular": 0.035,
    "subarachnoid": 0.048,
    "subdural": 0.063,
    ANY: 0.144,
}
BLEEDING_SERIES = 0.40  # fraction of series with any hemorrhage
_RUN_FRACTION = (0.12, 0.60)  # a bleeding series' positive run, as a fraction of its slices (mean 0.36 = 0.144 / 0.40)
_SECONDARY_FRACTION = (0.30, 1.00)  # a secondary subtype's run, as a fraction of the positive run
#: Pixel encodings (as :func:`ich.data.synth._dicom_bytes` names them) and the fraction of series stored each way.
ENCODINGS: tuple[str, ...] = ("signed16", "unsigned12", "wrapped")
_ENCODING_SHARE = (0.60, 0.37, 0.03)
_MULTIVALUED_WINDOW_SHARE = 0.20
POOL = 32  # precomputed pixel arrays per encoding, each for plain and for bleeding slices
SLICE_SPACING_MM = 5.0

# Placeholders of the final byte lengths, found once in each template and patched in every file.
_IMAGE_MARK = "ID_deadbeef1"  # ID_ + 9 hex (SOPInstanceUID and MediaStorageSOPInstanceUID)
_PATIENT_MARK = "ID_facefeed"  # ID_ + 8 hex
_STUDY_MARK = "ID_aaaaaaaaaa"  # ID_ + 10 hex
_SERIES_MARK = "ID_bbbbbbbbbb"
_Z_MARK = 1234.5  # ImagePositionPatient[2], written "1234.5": z is patched as "%.1f" padded to 6 characters
_Z_WIDTH = 6


@dataclass(frozen=True)
class RsnaPlan:
    """Every random choice of a set, made before any file is written.

    Series ``s`` owns images ``starts[s]:starts[s + 1]`` (in file order, shuffled against z). IDs are kept as
    integer codes: an image is ``ID_%09x``, a patient ``ID_%08x``, a study or series ``ID_%010x``.
    """

    patient_codes: np.ndarray  # (patients,) uint64
    series_patient: np.ndarray  # (series,) index into patient_codes
    study_codes: np.ndarray  # (series,) uint64
    series_codes: np.ndarray  # (series,) uint64
    series_encoding: np.ndarray  # (series,) index into ENCODINGS
    series_multivalued: np.ndarray  # (series,) bool
    starts: np.ndarray  # (series + 1,) int64
    image_codes: np.ndarray  # (images,) uint64
    z_tenths: np.ndarray  # (images,) int64: ImagePositionPatient[2] in tenths of a mm
    labels: np.ndarray  # (images, 6) uint8, columns in RSNA_ROW_ORDER
    pool_index: np.ndarray  # (images,) uint8
    corrupt: int  # image index of the file written with truncated PixelData
    missing: int  # image index listed in the CSV but not written
    csv_order: np.ndarray  # (images,) permutation: the CSV's image order

    def image_id(self, index: int) -> str:
        return f"ID_{int(self.image_codes[index]):09x}"

    def patient_id(self, series: int) -> str:
        return f"ID_{int(self.patient_codes[self.series_patient[series]]):08x}"

    def study_uid(self, series: int) -> str:
        return f"ID_{int(self.study_codes[series]):010x}"

    def series_uid(self, series: int) -> str:
        return f"ID_{int(self.series_codes[series]):010x}"

    def z(self, index: int) -> float:
        return int(self.z_tenths[index]) / 10


def _unique_codes(rng: np.random.Generator, count: int, digits: int, exclude: int | None = None) -> np.ndarray:
    """``count`` distinct random integers below ``16**digits`` (first occurrences of a few extra draws)."""
    high = 16**digits
    codes = np.empty(0, dtype=np.uint64)
    while len(codes) < count:
        draws = np.concatenate([codes, rng.integers(0, high, size=count + count // 100 + 16, dtype=np.uint64)])
        if exclude is not None:
            draws = draws[draws != exclude]
        _, first = np.unique(draws, return_index=True)
        codes = draws[np.sort(first)]
    return codes[:count]


def _slice_counts(rng: np.random.Generator, images: int, series: int) -> np.ndarray:
    """Slices per series: uniform over RSNA's 24-46 scaled to ``images / series``, then +-1 on random series
    until the total is exactly ``images``."""
    mean = images / series
    low = max(1, round(mean * 24 / 34.62))
    high = max(low, round(mean * 46 / 34.62))
    counts = rng.integers(low, high + 1, size=series).astype(np.int64)
    while (difference := images - int(counts.sum())) != 0:
        step = 1 if difference > 0 else -1
        chosen = rng.choice(series, size=min(abs(difference), series), replace=False)
        if step < 0:
            chosen = chosen[counts[chosen] > 1]
        counts[chosen] += step
    return counts


def _subtype_odds() -> tuple[np.ndarray, np.ndarray]:
    """Per subtype: the chance of being a bleeding series' primary subtype (covering its whole positive run) and
    the chance of appearing as a secondary one (on a shorter run inside it), so that in expectation each subtype
    covers ``PREVALENCE[subtype] / PREVALENCE[any]`` of the positive slices."""
    ratio = np.array([PREVALENCE[name] / PREVALENCE[ANY] for name in SUBTYPES])
    primary = ratio / ratio.sum()
    mean_secondary = sum(_SECONDARY_FRACTION) / 2
    secondary = (ratio - primary) / ((1.0 - primary) * mean_secondary)
    return primary, np.clip(secondary, 0.0, 1.0)


def _quotas(shares: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total`` in proportion to ``shares`` (largest remainders)."""
    exact = shares / shares.sum() * total
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact, kind="stable")[: total - int(counts.sum())]] += 1
    return counts


def plan_rsna_size_set(
    images: int = RSNA_IMAGES, series: int = RSNA_SERIES, patients: int = RSNA_PATIENTS, seed: int = 0
) -> RsnaPlan:
    """Lay out the set :func:`write_rsna_size_set` writes for the same arguments (no files)."""
    if not 1 <= patients <= series <= images:
        raise ValueError(f"need 1 <= patients <= series <= images. Received: {patients=}, {series=}, {images=}")
    if images < 2:
        raise ValueError("need at least 2 images (one corrupt, one missing)")
    rng = np.random.default_rng(seed)
    patient_codes = _unique_codes(rng, patients, 8)
    extra = series - patients
    second = rng.choice(patients, size=extra, replace=extra > patients)
    series_patient = np.sort(np.concatenate([np.arange(patients), second]))
    uids = _unique_codes(rng, 2 * series, 10)
    study_codes, series_codes = uids[:series], uids[series:]
    series_encoding = rng.choice(len(ENCODINGS), size=series, p=_ENCODING_SHARE)
    series_multivalued = rng.random(series) < _MULTIVALUED_WINDOW_SHARE
    counts = _slice_counts(rng, images, series)
    starts = np.concatenate([[0], np.cumsum(counts)])
    image_codes = _unique_codes(rng, images, 9)
    z_start = rng.integers(-3000, 1000, size=series)  # tenths of a mm
    pool_index = rng.integers(0, POOL, size=images, dtype=np.uint8)
    # Exact quotas rather than independent draws, so even epidural (~300 series at RSNA size) lands near its target.
    bleeding = np.zeros(series, dtype=bool)
    bleeding[rng.choice(series, size=round(BLEEDING_SERIES * series), replace=False)] = True
    bleeders = np.flatnonzero(bleeding)
    primary_odds, secondary_odds = _subtype_odds()
    primary_of = rng.permutation(np.repeat(np.arange(len(SUBTYPES)), _quotas(primary_odds, len(bleeders))))
    secondary = np.zeros((len(bleeders), len(SUBTYPES)), dtype=bool)
    for subtype in range(len(SUBTYPES)):
        candidates = np.flatnonzero(primary_of != subtype)
        chosen = rng.choice(candidates, size=round(secondary_odds[subtype] * len(candidates)), replace=False)
        secondary[chosen, subtype] = True
    row_of = {int(index): row for row, index in enumerate(bleeders)}

    z_tenths = np.empty(images, dtype=np.int64)
    labels = np.zeros((images, len(RSNA_ROW_ORDER)), dtype=np.uint8)
    any_column = RSNA_ROW_ORDER.index(ANY)
    step = round(SLICE_SPACING_MM * 10)
    for index in range(series):
        start, count = int(starts[index]), int(counts[index])
        rank = rng.permutation(count)  # z rank of each slice in file order
        z_tenths[start : start + count] = z_start[index] + step * rank
        if not bleeding[index]:
            continue
        row = row_of[index]
        by_rank = np.zeros((count, len(RSNA_ROW_ORDER)), dtype=np.uint8)
        length = min(count, max(1, round(rng.uniform(*_RUN_FRACTION) * count)))
        first = int(rng.integers(0, count - length + 1))
        by_rank[first : first + length, RSNA_ROW_ORDER.index(SUBTYPES[primary_of[row]])] = 1
        for subtype in np.flatnonzero(secondary[row]):
            sub_length = max(1, round(rng.uniform(*_SECONDARY_FRACTION) * length))
            sub_first = first + int(rng.integers(0, length - sub_length + 1))
            by_rank[sub_first : sub_first + sub_length, RSNA_ROW_ORDER.index(SUBTYPES[subtype])] = 1
        by_rank[first : first + length, any_column] = 1
        labels[start : start + count] = by_rank[rank]
    if z_tenths.max() > 99_999:  # z is patched in as 6 characters ("-300.0" to "9999.9")
        raise ValueError(f"series of up to {int(counts.max())} slices reach z > 9999.9 mm: use more series")

    positive = np.flatnonzero(labels[:, any_column]) if labels[:, any_column].sum() >= 2 else np.arange(images)
    corrupt, missing = (int(value) for value in positive[rng.choice(len(positive), size=2, replace=False)])
    csv_order = rng.permutation(images)
    return RsnaPlan(
        patient_codes=patient_codes,
        series_patient=series_patient,
        study_codes=study_codes,
        series_codes=series_codes,
        series_encoding=series_encoding,
        series_multivalued=series_multivalued,
        starts=starts,
        image_codes=image_codes,
        z_tenths=z_tenths,
        labels=labels,
        pool_index=pool_index,
        corrupt=corrupt,
        missing=missing,
        csv_order=csv_order,
    )


def _head_slices(size: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """POOL plain and POOL bleeding HU slices: a head ellipse (brain, bone rim) in air, mild noise; a blob on the
    bleeding ones."""
    rng = np.random.default_rng([seed, 1])
    yy, xx = np.mgrid[:size, :size].astype(np.float64) + 0.5
    plain, bleeding = [], []
    for with_blob in (False, True):
        for _ in range(POOL):
            cx, cy = size / 2 * (1 + rng.uniform(-0.03, 0.03)), size / 2 * (1 + rng.uniform(-0.03, 0.03))
            ax, ay = size * rng.uniform(0.33, 0.37), size * rng.uniform(0.40, 0.44)
            radius = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
            hu = np.where(radius < 1.0, 1000.0, -1000.0)
            hu[radius < 0.9] = 40.0
            hu += rng.normal(0.0, 4.0, hu.shape)
            if with_blob:
                angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.55)
                bx, by = cx + distance * ax * np.cos(angle), cy + distance * ay * np.sin(angle)
                blob = (xx - bx) ** 2 + (yy - by) ** 2 < (size * rng.uniform(0.05, 0.10)) ** 2
                hu[blob] = 70.0 + rng.normal(0.0, 4.0, int(blob.sum()))
            (bleeding if with_blob else plain).append(hu)
    return plain, bleeding


@dataclass(frozen=True)
class _Template:
    """One encoded header (+ placeholder pixels) and where its patched fields lie."""

    data: bytes
    image_offsets: tuple[int, int]
    patient_offset: int
    study_offset: int
    series_offset: int
    z_offset: int
    pixel_offset: int
    pixel_length: int


def _offset(data: bytes, mark: str, end: int, times: int = 1) -> list[int]:
    found, position = [], data.find(mark.encode(), 0, end)
    while position >= 0:
        found.append(position)
        position = data.find(mark.encode(), position + 1, end)
    if len(found) != times:
        raise RuntimeError(f"placeholder {mark!r} found {len(found)} times in the template, expected {times}")
    return found


def _template(size: int, encoding: str, multivalued: bool) -> _Template:
    hu = np.zeros((size, size))
    data = _dicom_bytes(hu, _IMAGE_MARK, _PATIENT_MARK, _STUDY_MARK, _SERIES_MARK, _Z_MARK, encoding, multivalued)
    pixel_length = size * size * 2
    pixel_offset = len(data) - pixel_length
    z_text = f"{_Z_MARK:.1f}"
    assert len(z_text) == _Z_WIDTH
    return _Template(
        data=data,
        image_offsets=tuple(_offset(data, _IMAGE_MARK, pixel_offset, times=2)),  # type: ignore[arg-type]
        patient_offset=_offset(data, _PATIENT_MARK, pixel_offset)[0],
        study_offset=_offset(data, _STUDY_MARK, pixel_offset)[0],
        series_offset=_offset(data, _SERIES_MARK, pixel_offset)[0],
        z_offset=_offset(data, "\\" + z_text, pixel_offset)[0] + 1,
        pixel_offset=pixel_offset,
        pixel_length=pixel_length,
    )


def _stored_pixels(hu: np.ndarray, encoding: str) -> bytes:
    """The PixelData bytes :func:`ich.data.synth._dicom_bytes` writes for ``hu`` in ``encoding``."""
    data = _dicom_bytes(hu, _IMAGE_MARK, _PATIENT_MARK, _STUDY_MARK, _SERIES_MARK, _Z_MARK, encoding, False)
    return data[len(data) - hu.size * 2 :]


# Per worker process: templates[(encoding, multivalued)], pixels[encoding][bleeding][pool index], output folder.
_STATE: dict[str, object] = {}


def _init_worker(templates: dict, pixels: dict, folder: str) -> None:
    _STATE.update(templates=templates, pixels=pixels, folder=folder)


def _write_series_chunk(chunk: dict) -> tuple[int, int]:
    """Write the files of a run of series; return (files written, bytes written)."""
    templates: dict = _STATE["templates"]  # type: ignore[assignment]
    pixels: dict = _STATE["pixels"]  # type: ignore[assignment]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    directory = os.open(str(_STATE["folder"]), os.O_RDONLY)
    files = written = 0
    try:
        codes = chunk["image_codes"].tolist()
        z_values = chunk["z_tenths"].tolist()
        bleeding = chunk["bleeding"].tolist()
        pool = chunk["pool_index"].tolist()
        corrupt, missing = chunk["corrupt"], chunk["missing"]
        starts = chunk["starts"].tolist()
        for position, (patient, study, series, encoding, multivalued) in enumerate(chunk["series"]):
            template: _Template = templates[(encoding, multivalued)]
            block = pixels[encoding]
            buffer = bytearray(template.data)
            buffer[template.patient_offset : template.patient_offset + 11] = b"ID_%08x" % patient
            buffer[template.study_offset : template.study_offset + 13] = b"ID_%010x" % study
            buffer[template.series_offset : template.series_offset + 13] = b"ID_%010x" % series
            first_image, second_image = template.image_offsets
            z_at, pixel_at, pixel_end = template.z_offset, template.pixel_offset, template.pixel_offset + template.pixel_length
            for index in range(starts[position], starts[position + 1]):
                if index == missing:
                    continue
                image = b"ID_%09x" % codes[index]
                buffer[first_image : first_image + 12] = image
                buffer[second_image : second_image + 12] = image
                buffer[z_at : z_at + _Z_WIDTH] = b"%-6.1f" % (z_values[index] / 10)
                buffer[pixel_at:pixel_end] = block[bleeding[index]][pool[index]]
                data: bytes | bytearray = buffer
                if index == corrupt:  # PixelData cut to a third, its element length saying so (RSNA's ID_6431af929)
                    short = (template.pixel_length // 3) & ~1
                    data = bytearray(buffer[: pixel_at + short])
                    data[pixel_at - 4 : pixel_at] = short.to_bytes(4, "little")
                descriptor = os.open(image + b".dcm", flags, 0o644, dir_fd=directory)
                try:
                    written += os.write(descriptor, data)
                finally:
                    os.close(descriptor)
                files += 1
    finally:
        os.close(directory)
    return files, written


def _chunks(plan: RsnaPlan, images_per_chunk: int) -> list[dict]:
    any_column = RSNA_ROW_ORDER.index(ANY)
    boundaries = [0]
    for index in range(1, len(plan.starts) - 1):
        if plan.starts[index] - plan.starts[boundaries[-1]] >= images_per_chunk:
            boundaries.append(index)
    boundaries.append(len(plan.starts) - 1)
    chunks = []
    for first, last in zip(boundaries[:-1], boundaries[1:]):
        low, high = int(plan.starts[first]), int(plan.starts[last])
        series = [
            (
                int(plan.patient_codes[plan.series_patient[index]]),
                int(plan.study_codes[index]),
                int(plan.series_codes[index]),
                ENCODINGS[int(plan.series_encoding[index])],
                bool(plan.series_multivalued[index]),
            )
            for index in range(first, last)
        ]
        chunks.append(
            {
                "series": series,
                "starts": plan.starts[first : last + 1] - low,
                "image_codes": plan.image_codes[low:high],
                "z_tenths": plan.z_tenths[low:high],
                "bleeding": plan.labels[low:high, any_column].astype(bool),
                "pool_index": plan.pool_index[low:high],
                "corrupt": plan.corrupt - low,
                "missing": plan.missing - low,
            }
        )
    return chunks


def _csv_text(plan: RsnaPlan) -> str:
    names = RSNA_ROW_ORDER
    codes, labels = plan.image_codes.tolist(), plan.labels.tolist()
    lines = ["ID,Label\n"]
    for index in plan.csv_order.tolist():
        image, values = f"ID_{codes[index]:09x}", labels[index]
        lines.append("".join(f"{image}_{name},{value}\n" for name, value in zip(names, values)))
    return "".join(lines)


def write_rsna_size_set(
    root: Path,
    images: int = 752_803,
    series: int = 21_745,
    patients: int = 18_939,
    size: int = 64,
    seed: int = 0,
    workers: int = 2,
) -> dict:
    """Write ``root/stage_2_train/<ID>.dcm`` and ``root/stage_2_train.csv`` (see the module docstring).

    Args:
        root: output folder (created; files of the same names are overwritten).
        images, series, patients: the set's size; RSNA 2019's by default.
        size: rows and columns of every slice.
        seed: every random choice follows from it; the output does not depend on ``workers``.
        workers: processes writing files (1 or less: write in this process).

    Returns:
        Counts: images (in the CSV), files (written), series, studies, patients, patients_two_series,
        positive_<label> per label, <encoding>_series, multivalued_window_series, corrupt_files, corrupt_id,
        missing_files, missing_id, csv_rows, bytes (DICOMs + CSV), seconds.
    """
    started = time.perf_counter()
    root = Path(root)
    folder = root / "stage_2_train"
    folder.mkdir(parents=True, exist_ok=True)
    plan = plan_rsna_size_set(images, series, patients, seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        templates = {(name, multi): _template(size, name, multi) for name in ENCODINGS for multi in (False, True)}
        plain, bleeding = _head_slices(size, seed)
        pixels = {
            name: ([_stored_pixels(hu, name) for hu in plain], [_stored_pixels(hu, name) for hu in bleeding])
            for name in ENCODINGS
        }
    chunks = _chunks(plan, images_per_chunk=max(2_000, min(20_000, images // max(1, 8 * workers))))
    if workers <= 1:
        _init_worker(templates, pixels, str(folder))
        results = [_write_series_chunk(chunk) for chunk in chunks]
        csv_text = _csv_text(plan)
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(templates, pixels, str(folder))) as pool:
            futures = [pool.submit(_write_series_chunk, chunk) for chunk in chunks]
            csv_text = _csv_text(plan)  # while the workers write
            results = [future.result() for future in futures]
    csv_bytes = csv_text.encode()
    (root / "stage_2_train.csv").write_bytes(csv_bytes)

    per_patient = np.bincount(plan.series_patient, minlength=patients)
    positives = plan.labels.sum(axis=0)
    return {
        "images": images,
        "files": sum(files for files, _ in results),
        "series": series,
        "studies": series,
        "patients": patients,
        "patients_two_series": int((per_patient >= 2).sum()),
        **{f"positive_{name}": int(positives[RSNA_ROW_ORDER.index(name)]) for name in (ANY, *SUBTYPES)},
        **{f"{name}_series": int((plan.series_encoding == index).sum()) for index, name in enumerate(ENCODINGS)},
        "multivalued_window_series": int(plan.series_multivalued.sum()),
        "corrupt_files": 1,
        "corrupt_id": plan.image_id(plan.corrupt),
        "missing_files": 1,
        "missing_id": plan.image_id(plan.missing),
        "csv_rows": images * len(RSNA_ROW_ORDER),
        "bytes": sum(written for _, written in results) + len(csv_bytes),
        "seconds": round(time.perf_counter() - started, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="output folder (stage_2_train/ and stage_2_train.csv go here)")
    parser.add_argument("--images", type=int, default=RSNA_IMAGES)
    parser.add_argument("--series", type=int, help="default: RSNA's ratio to --images")
    parser.add_argument("--patients", type=int, help="default: RSNA's ratio to --images")
    parser.add_argument("--size", type=int, default=64, help="rows and columns of every slice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    series = args.series or max(1, round(args.images * RSNA_SERIES / RSNA_IMAGES))
    patients = args.patients or max(1, round(series * RSNA_PATIENTS / RSNA_SERIES))
    counts = write_rsna_size_set(args.root, args.images, series, patients, args.size, args.seed, args.workers)
    for key, value in counts.items():
        print(f"{key}: {value}")
    seconds = counts["seconds"]
    print(
        f"rate: {counts['files'] / seconds:,.0f} files/s, {counts['bytes'] / seconds / 2**20:,.0f} MiB/s, "
        f"{seconds / counts['files'] * 1e6:.1f} us/file; at RSNA size ({RSNA_IMAGES:,} files): "
        f"{RSNA_IMAGES * seconds / counts['files'] / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
