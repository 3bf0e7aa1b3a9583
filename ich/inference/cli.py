"""`ich predict`: a trained model on new studies. A folder of CT DICOMs in; per-slice and per-series
probabilities, a Kaggle submission, the quarantine and an offline report out.

    python -m ich.predict DICOM_DIR --models models --out OUT [--tta] [--threshold X] [--batch-size N] [--workers N]
        [--key-slices K] [--dicom-sr]

The folder is searched recursively and file names do not matter. Every file's header is read first (in
parallel, no pixel data) to find its image ID, series and slice position (:mod:`ich.inference.scan`); then whole
series, a chunk at a time, are decoded and rendered in memory by the preprocess stage's own per-file code in
worker processes (:mod:`ich.inference.render`: same windows, same resizing, same timeouts and quarantine reasons),
while the model predicts the chunk before (:mod:`ich.inference.predict`). Memory stays flat however many studies
there are.

Outputs (each written atomically, :mod:`ich.inference.outputs`) in ``OUT/``:

- ``slices.csv``: ``ID``, ``SeriesInstanceUID``, ``position_z``, one probability column per label (the final
  predictions: the sequence model's when the model folder has one), ``cnn_<label>`` (the CNN alone) when it
  has, and ``file`` (the path under DICOM_DIR); series after series, each in z order.
- ``series.csv``: one row per series: ``slices``, per label the series score (the highest slice probability)
  and ``<label>_flagged`` (slices at or above the label's threshold), then per label its key slices
  (``--key-slices K``, default 3): ``<label>_key_slices``, the IDs of the K slices of highest probability separated
  by spaces, highest first, and ``<label>_key_z``, their z positions in mm in the same order (ties: lower z, then
  lower ID; see :mod:`ich.inference.outputs`); then, when the model folder has out-of-distribution statistics,
  ``ood_distance``, ``ood_intensity_z`` and ``out_of_distribution`` (:mod:`ich.inference.ood`; True: the series lies
  outside the training data, its predictions are unreliable), which ``slices.csv`` then ends with too.
- ``submission.csv``: Kaggle's ``ID,Label`` with ``<ID>_<label>``, six rows per usable image. Quarantined
  images are not in it.
- ``quarantine.csv``: ``ID,reason,file`` for every file that could not be used (``ID`` empty when none was
  found).
- ``report.html`` (one offline page) and ``explanations/<ID>_<label>.png`` (Grad-CAM overlays), see
  :mod:`ich.reports.predict_page`, with a banner when series lie outside the training data; ``summary.json``:
  counts, thresholds and settings of the run, ``ood_series`` (flagged) and ``ood_threshold`` among them.
- with ``--dicom-sr``: ``sr/series_0001.dcm``, ... one DICOM Structured Report per series (numbered in the order
  of ``series.csv``; :mod:`ich.inference.dicom_sr`), listed in ``summary.json``'s ``sr_files`` (``file``,
  ``SeriesInstanceUID``, ``SOPInstanceUID``); a series whose report could not be made is in ``sr_failures``
  (``SeriesInstanceUID``, ``reason``) and the run goes on.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ich.core.errors import PipelineError
from ich.core.files import write_csv, write_json
from ich.core.labels import LABELS
from ich.inference.ood import OOD_COLUMN, ood_message, ood_summary
from ich.inference.outputs import OUTPUT_FILES, SR_FOLDER, write_outputs
from ich.inference.predict import predict_files
from ich.inference.scan import scan_folder
from ich.models.document import HeldOutEvaluation, document_of, read_evaluation

if TYPE_CHECKING:
    from ich.inference.explain import Explainer
    from ich.inference.loading import LoadedModel
    from ich.models.card import ModelCard

__all__ = [
    "positive_int",
    "non_negative_int",
    "probability",
    "build_parser",
    "check_model_folder",
    "load_model_folder",
    "card_summary",
    "run_predict",
    "main",
]

_PROG = "python -m ich.predict"


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


def build_parser(prog: str = _PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Predict intracranial hemorrhage on a folder of head-CT DICOMs with a trained model. Research use only.",
    )
    parser.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder of DICOM files (searched recursively; any file names)")
    parser.add_argument("--models", default="models", help="trained model folder (with model.json); default: models")
    parser.add_argument("--out", required=True, help="output folder (created; existing outputs of a previous run are replaced)")
    parser.add_argument("--tta", action="store_true", help="average each image with its horizontal mirror")
    parser.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="one decision threshold for every label (default: the model card's per-label thresholds, tuned on validation)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per model batch (default 64)")
    parser.add_argument(
        "--workers", type=non_negative_int, default=0, help="processes reading and rendering DICOMs; 0 = all cores (default)"
    )
    parser.add_argument(
        "--chunk-images",
        type=positive_int,
        default=256,
        help="images (whole series) rendered and predicted at a time (default 256)",
    )
    parser.add_argument(
        "--file-timeout-s", type=float, default=60.0, help="a file taking longer to decode is quarantined (default 60)"
    )
    parser.add_argument(
        "--explain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Grad-CAM overlays of flagged slices in the report (default on)",
    )
    parser.add_argument(
        "--explain-slices", type=non_negative_int, default=3, help="flagged slices per series that get Grad-CAM maps (default 3)"
    )
    parser.add_argument(
        "--report-series",
        type=non_negative_int,
        default=50,
        help="series shown in full in report.html, those with the highest P(any) (default 50; every series is in its table)",
    )
    parser.add_argument(
        "--key-slices",
        type=non_negative_int,
        default=3,
        help="per series and label, the slices of highest probability listed in series.csv and the report (default 3; 0 = none)",
    )
    parser.add_argument(
        "--dicom-sr", action="store_true", help="also write one DICOM Structured Report (TID 1500) per series into OUT/sr/"
    )
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


def _thresholds(card: ModelCard, threshold: float | None) -> dict[str, float]:
    """One threshold for every label when given, else the card's per-label thresholds (0.5 where it has none)."""
    if threshold is not None:
        return {label: float(threshold) for label in LABELS}
    tuned = card.thresholds
    return {label: float(tuned.get(label, 0.5)) for label in LABELS}


def _remove(path: Path) -> None:
    """Remove a previous run's output folder (or whatever stands at its name; a link, not what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def card_summary(card: ModelCard, evaluation: HeldOutEvaluation | None = None) -> str:
    """One paragraph on the model a run uses, from its card (and the folder's test evaluation when there is one):
    what it is, what it was trained on, how its decisions are made, how it did on its test split, and its intended use."""
    backbones = getattr(card, "backbones", None) or {}
    parts = [f"Model: {card.arch}" + (f" ({', '.join(str(name) for name in backbones.values())})" if backbones else "")]
    parts.append(
        f"{card.image_size} px slices in the {', '.join(str(window.get('name', '?')) for window in card.windows)} windows"
    )
    if card.context_slices:
        parts.append(f"2.5D input ({card.context_slices} slice(s) either side)")
    if card.sequence is not None:
        parts.append("a sequence model over each series makes the final predictions")
    document = document_of(card)
    if document is not None:
        data = document.training_data
        parts.append(
            f"trained on {data.train_images} slices of {data.train_patients} patients (+{data.augmented_copies} augmented), "
            f"{100 * data.train_prevalence.get('any', 0):.1f} % with a bleed"
            + (f", at git {document.git_revision[:10]}" if document.git_revision else "")
        )
    elif getattr(card, "train_images", None):
        parts.append(f"trained on {card.train_images} images")  # type: ignore[attr-defined]
    parts.append(f"decisions at per-label thresholds ({card.thresholds_from})")
    if evaluation is not None and evaluation.weighted_log_loss is not None:
        ci = evaluation.weighted_log_loss_ci95
        parts.append(
            f"on its test split ({evaluation.images} slices of {evaluation.patients} patients) weighted log loss "
            f"{evaluation.weighted_log_loss:.4f}"
            + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
            + (f", mean subtype AUC {evaluation.mean_subtype_auc:.3f}" if evaluation.mean_subtype_auc is not None else "")
        )
    use = "For research use only, not for clinical use."
    if document is not None:
        use = document.intended_use
    return "; ".join(parts) + ". " + use


def run_predict(
    args: argparse.Namespace, explainer_factory: Callable[[LoadedModel], Explainer] | None = None
) -> dict[str, object]:
    """The command's work after parsing (see the module docstring); returns the summary written to ``summary.json``.

    Raises:
        PipelineError: no DICOM files, no model folder, or not one usable image.
    """
    from ich.reports.predict_page import ReportCollector, write_predict_report

    if args.file_timeout_s is not None and not args.file_timeout_s > 0:
        raise PipelineError(f"--file-timeout-s must be > 0 seconds. Received: {args.file_timeout_s}")
    out = Path(args.out)
    models_dir = check_model_folder(args.models)  # before the scan: a wrong folder fails at once
    scan = scan_folder(args.dicom_dir, workers=args.workers, exclude=out, progress=not args.no_progress)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:  # a previous run's outputs must not pass for this run's if it stops early
        (out / name).unlink(missing_ok=True)
    _remove(out / SR_FOLDER)
    model = load_model_folder(args.models)
    print(card_summary(model.card, read_evaluation(models_dir)), file=sys.stderr)
    thresholds = _thresholds(model.card, args.threshold)
    explainer = None
    if args.explain and args.explain_slices > 0 and args.report_series > 0:
        from ich.inference.explain import gradcam_explainer  # TensorFlow's Grad-CAM: imported only when maps are made

        explainer = (explainer_factory or gradcam_explainer)(model)
    collector = ReportCollector(
        model=model, thresholds=thresholds, max_series=args.report_series, explain_slices=args.explain_slices, explainer=explainer
    )
    prediction = predict_files(
        model,
        scan,
        tta=args.tta,
        batch_size=args.batch_size,
        workers=args.workers,
        chunk_images=args.chunk_images,
        file_timeout_s=args.file_timeout_s,
        progress=not args.no_progress,
        on_chunk=collector.add,
    )
    if prediction.slices.empty:
        write_csv(prediction.quarantine, out / "quarantine.csv")
        reasons = Counter(prediction.quarantine["reason"]).most_common(3)
        raise PipelineError(
            f"None of the {scan.found} files under {str(args.dicom_dir)!r} could be used. Most common: "
            + "; ".join(f"{count} x {reason}" for reason, count in reasons)
            + f". Every file and its reason is in {out / 'quarantine.csv'}."
        )
    series = write_outputs(out, prediction, thresholds, args.key_slices)
    ood = ood_summary(prediction.ood, model.ood)
    ood_note = ood_message(ood, len(series))
    print(ood_note, file=sys.stderr)
    outside = series.loc[series[OOD_COLUMN].astype(bool), "SeriesInstanceUID"].astype(str) if OOD_COLUMN in series else []
    summary: dict[str, object] = {
        **prediction.counts,
        "models": str(models_dir),
        "arch": model.card.arch,
        "image_size": model.image_size,
        "sequence_model": prediction.sequence,
        "tta": bool(args.tta),
        "thresholds": thresholds,
        "thresholds_from": "--threshold" if args.threshold is not None else "model card (tuned on validation)",
        "explanations": explainer is not None,
        "key_slices": args.key_slices,
        "dicom_sr": bool(args.dicom_sr),
        **ood,
    }
    if args.dicom_sr:
        from ich.inference.dicom_sr import ModelIdentity, write_series_reports  # highdicom: imported only when used

        summary["sr_files"], summary["sr_failures"] = write_series_reports(
            out, args.dicom_dir, prediction.slices, series, thresholds, ModelIdentity.from_card(model.card)
        )
    write_predict_report(out, collector, series, prediction.quarantine, thresholds, summary, list(outside), ood_note)
    write_json(summary, out / "summary.json")
    return summary


def main(argv: Sequence[str] | None = None, prog: str = _PROG) -> None:
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
        failures = summary.get("sr_failures")
        if isinstance(failures, list) and failures:
            print(f"{len(failures)} series got no DICOM SR; the reasons are in summary.json (sr_failures)", file=sys.stderr)

    run_stage(work)


if __name__ == "__main__":
    main()
