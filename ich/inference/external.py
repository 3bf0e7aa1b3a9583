"""`ich evaluate-external`: score a trained model on an external labelled set, without retraining.

    python -m ich.evaluate_external --dicom-dir D --labels-csv L --models M --out O

``D`` is any folder tree of CT DICOMs (read as `ich predict` reads it: recursively, any file names, whole
series); ``L`` the labels in RSNA's long format (``ID,Label`` with ``ID_<image>_<label>``, read by
:func:`ich.data.labels_csv.parse_long_csv`). Every DICOM is predicted (unlabelled slices still give their neighbours
context); the labelled ones are scored. Outputs in ``O/``:

- ``evaluate.json``: the evaluate stage's schema (:func:`ich.evaluation.metrics.evaluate_predictions`: per label AUC with
  its patient-bootstrap 95 % interval, accuracy, precision, recall, F1 at ``--threshold`` and, under ``tuned``,
  at the model card's thresholds; weighted log loss with its interval; a ``series_level`` block), patients being
  the DICOMs' ``PatientID``; with a sequence model, ``by_model`` holds ``cnn`` and ``sequence``. ``external``
  says what was matched.
- ``predictions.csv``: ``ID`` and one probability column per label (the final predictions the metrics come from),
  ``cnn_<label>`` too with a sequence model, and ``out_of_distribution`` (of the image's series) when the model folder
  has out-of-distribution statistics (:mod:`ich.inference.ood`); ``external`` then counts the flagged series
  (``ood_series`` of ``series``, ``ood_threshold``), and a line on stderr says how many there are.
- ``quarantine.csv``: ``ID,reason,file``: label rows that could not be used (``labels: …``), files that could not
  be read, and labelled images without a usable DICOM.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ich.core.errors import PipelineError
from ich.core.files import write_csv, write_json
from ich.core.labels import LABELS
from ich.data.labels_csv import parse_long_csv

if TYPE_CHECKING:
    from ich.inference.loading import LoadedModel
    from ich.inference.predict import Prediction
    from ich.models.card import ModelCard

__all__ = ["external_metrics", "external_quarantine", "build_parser", "run_evaluate_external", "main"]


def _thresholds(values: object, fallback: dict[str, float]) -> dict[str, float]:
    values = values if isinstance(values, dict) else {}
    return {label: float(values.get(label, fallback[label])) for label in LABELS}


def external_metrics(
    prediction: Prediction,
    labels: pd.DataFrame,
    card: ModelCard,
    threshold: float = 0.5,
    draws: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, object], pd.DataFrame]:
    """The metrics of the labelled, predicted images, and those rows (``ID``, labels as ``true_<label>``, the
    prediction's columns).

    Args:
        prediction: :func:`ich.inference.predict.predict_files` on the folder.
        labels: the wide labels table (``ID`` + :data:`LABELS`).
        card: the model card: ``thresholds`` (of the final predictions) go under ``tuned``; ``cnn_thresholds``
            (else ``thresholds``) under the CNN's ``tuned`` in ``by_model``.

    Raises:
        PipelineError: not one labelled image was predicted.
    """
    truth = labels.rename(columns={label: f"true_{label}" for label in LABELS})
    rows = prediction.slices.merge(truth, on="ID", how="inner", validate="one_to_one")
    if rows.empty:
        raise PipelineError(
            f"None of the {len(labels)} labelled images is among the {len(prediction.slices)} predicted DICOMs. Check that "
            "--labels-csv describes the images of --dicom-dir (IDs are the DICOM file names ID_<hex>.dcm, else their SOPInstanceUID)."
        )
    from ich.evaluation.metrics import evaluate_predictions

    y_true = rows[[f"true_{label}" for label in LABELS]].to_numpy(dtype=int)
    groups = rows["PatientID"].to_numpy(dtype=object).astype(str)
    series = rows["SeriesInstanceUID"].to_numpy(dtype=object).astype(str)
    final_tuned = _thresholds(card.thresholds, {label: threshold for label in LABELS})

    def score(columns: list[str], tuned: dict[str, float]) -> dict[str, object]:
        return evaluate_predictions(
            y_true,
            rows[columns].to_numpy(dtype=np.float64),
            threshold,
            tuned,
            groups=groups,
            series=series,
            draws=draws,
            seed=seed,
        )

    metrics = score(list(LABELS), final_tuned)
    if prediction.sequence:
        cnn_tuned = _thresholds(card.cnn_thresholds or card.thresholds, final_tuned)
        metrics["by_model"] = {"cnn": score([f"cnn_{label}" for label in LABELS], cnn_tuned), "sequence": dict(metrics)}
    metrics["combination"] = card.combination
    return metrics, rows


def external_quarantine(prediction: Prediction, rejected: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """``ID,reason,file``: rejected label rows, unusable files, and labelled images without a usable DICOM."""
    label_rows = pd.DataFrame({"ID": rejected["ID"], "reason": "labels: " + rejected["reason"], "file": ""})
    known = set(prediction.slices["ID"]) | set(prediction.quarantine["ID"])
    missing = sorted(set(labels["ID"]) - known)
    no_file = pd.DataFrame({"ID": missing, "reason": "no DICOM with this image ID under --dicom-dir", "file": ""})
    return pd.concat([label_rows, prediction.quarantine, no_file], ignore_index=True)[["ID", "reason", "file"]]


def build_parser(prog: str = "python -m ich.evaluate_external") -> argparse.ArgumentParser:
    from ich.inference.cli import non_negative_int, positive_int, probability

    parser = argparse.ArgumentParser(
        prog=prog, description="Score a trained model on an external labelled set of head-CT DICOMs, without retraining."
    )
    parser.add_argument("--dicom-dir", required=True, help="folder of DICOM files (searched recursively; any file names)")
    parser.add_argument("--labels-csv", required=True, help="labels in RSNA's long format (ID,Label with ID_<image>_<label>)")
    parser.add_argument("--models", default="models", help="trained model folder (with model.json); default: models")
    parser.add_argument("--out", required=True, help="output folder for evaluate.json, predictions.csv, quarantine.csv")
    parser.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="decision threshold of accuracy/precision/recall/F1 (default 0.5; "
        "the card's tuned thresholds are reported under `tuned`)",
    )
    parser.add_argument(
        "--bootstrap-draws", type=positive_int, default=1000, help="patient-level resamples for the 95%% intervals (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--tta", action="store_true", help="average each image with its horizontal mirror")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per model batch (default 64)")
    parser.add_argument(
        "--workers", type=non_negative_int, default=0, help="processes reading and rendering DICOMs; 0 = all cores (default)"
    )
    parser.add_argument(
        "--chunk-images", type=positive_int, default=256, help="images (whole series) rendered and predicted at a time"
    )
    parser.add_argument(
        "--file-timeout-s", type=float, default=60.0, help="a file taking longer to decode is quarantined (default 60)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_evaluate_external(args: argparse.Namespace) -> dict[str, object]:
    """The command's work after parsing; returns the metrics written to ``evaluate.json``.

    Raises:
        PipelineError: unusable labels CSV, no DICOMs, no model folder, or no labelled image predicted.
    """
    from ich.inference.cli import check_model_folder, load_model_folder
    from ich.inference.ood import OOD_COLUMN, ood_message, ood_summary
    from ich.inference.outputs import with_ood
    from ich.inference.predict import predict_files
    from ich.inference.scan import scan_folder

    if not args.file_timeout_s > 0:
        raise PipelineError(f"--file-timeout-s must be > 0 seconds. Received: {args.file_timeout_s}")
    out = Path(args.out)
    check_model_folder(args.models)
    if not Path(args.labels_csv).is_file():
        raise PipelineError(f"The labels CSV {str(args.labels_csv)!r} does not exist. Pass RSNA's long-format CSV (ID,Label).")
    parsed = parse_long_csv(args.labels_csv)
    if parsed.wide.empty:
        raise PipelineError(
            f"{args.labels_csv}: no usable label rows ({len(parsed.rejected)} rejected, e.g. {parsed.rejected['reason'].iloc[0]!r})."
        )
    scan = scan_folder(args.dicom_dir, workers=args.workers, exclude=out, progress=not args.no_progress)
    model: LoadedModel = load_model_folder(args.models)
    prediction = predict_files(
        model,
        scan,
        tta=args.tta,
        batch_size=args.batch_size,
        workers=args.workers,
        chunk_images=args.chunk_images,
        file_timeout_s=args.file_timeout_s,
        progress=not args.no_progress,
    )
    out.mkdir(parents=True, exist_ok=True)
    quarantine = external_quarantine(prediction, parsed.rejected, parsed.wide)
    write_csv(quarantine, out / "quarantine.csv")
    metrics, rows = external_metrics(
        prediction, parsed.wide, model.card, threshold=args.threshold, draws=args.bootstrap_draws, seed=args.seed
    )
    external: dict[str, object] = {
        "dicom_dir": str(args.dicom_dir),
        "labels_csv": str(args.labels_csv),
        "models": str(args.models),
        "tta": bool(args.tta),
        "files_found": scan.found,
        "labelled_images": int(len(parsed.wide)),
        "label_rows_rejected": int(len(parsed.rejected)),
        "images_predicted": int(len(prediction.slices)),
        "images_evaluated": int(len(rows)),
        "predicted_without_labels": int(len(prediction.slices) - len(rows)),
        "labelled_without_usable_dicom": int(len(parsed.wide) - len(rows)),
        "files_quarantined": int(len(prediction.quarantine)),
        "series": int(prediction.counts.get("series", 0)),
        **ood_summary(prediction.ood, model.ood),
    }
    metrics["external"] = external
    print(ood_message(external, prediction.counts.get("series", 0)), file=sys.stderr)
    columns = ["ID", *LABELS] + ([f"cnn_{label}" for label in LABELS] if prediction.sequence else [])
    if prediction.ood is not None:
        rows, columns = with_ood(rows, prediction.ood, (OOD_COLUMN,)), [*columns, OOD_COLUMN]
    write_csv(rows[columns], out / "predictions.csv")
    write_json(metrics, out / "evaluate.json")
    return metrics


def main(argv: Sequence[str] | None = None, prog: str = "python -m ich.evaluate_external") -> None:
    """The command line: errors a user can fix print one line and exit 1."""
    from ich.core.runner import run_stage

    args = build_parser(prog).parse_args(argv)

    def work() -> None:
        metrics = run_evaluate_external(args)
        external = metrics["external"]
        auc = metrics["any"]["auc"]  # type: ignore[index]
        print(
            f"evaluated {external['images_evaluated']} labelled images of {metrics.get('patients')} patients: AUC any "  # type: ignore[index]
            f"{'undefined' if auc is None else f'{auc:.3f}'}, weighted log loss {metrics['weighted_log_loss']:.4f}; outputs in {args.out}",
            file=sys.stderr,
        )

    run_stage(work)


if __name__ == "__main__":
    main()
