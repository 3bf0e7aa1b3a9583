"""The model card as a document: what a reader of ``models/model.json`` needs besides how to load the networks.

The sequence stage adds to the folder card (:mod:`ich.models.card`) the fields of :class:`CardDocument`: the
intended use, a summary of the training data (counts, prevalence, image size), the training run's git revision and
a hash of its data; the evaluate stage writes the headline test metrics with their intervals beside it, in
``models/evaluation.json`` (:class:`HeldOutEvaluation`), so the model folder carries its own results wherever it goes.
Both are validated when written and when ``ich predict`` reads them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ich.core.labels import LABELS

__all__ = [
    "INTENDED_USE",
    "EVALUATION_FILE",
    "TrainingData",
    "CardDocument",
    "HeldOutEvaluation",
    "training_data",
    "git_identity",
    "data_hash",
    "card_document",
    "evaluation_summary",
    "document_of",
    "read_evaluation",
]

INTENDED_USE = (
    "Research on intracranial hemorrhage detection in non-contrast head CT slices (RSNA 2019 labels). Not a medical "
    "device: not for diagnosis, triage or any clinical decision. Performance on data unlike the training data (other "
    "scanners, sites, protocols) is unknown; the out-of-distribution check flags some such series, not all."
)
#: The headline test metrics in the model folder (written by the evaluate stage).
EVALUATION_FILE = "evaluation.json"


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingData(_Document):
    """What the networks learnt from: slices (training split, its augmented copies), the validation slices that
    chose thresholds and early stopping, patients and series, and each label's prevalence (share of positive slices)."""

    image_size: int = Field(gt=0)
    train_images: int = Field(ge=0)
    augmented_copies: int = Field(ge=0)
    validation_images: int = Field(ge=0)
    train_patients: int = Field(ge=0)
    train_series: int = Field(ge=0)
    validation_patients: int = Field(ge=0)
    train_prevalence: dict[str, float]
    validation_prevalence: dict[str, float]


class CardDocument(_Document):
    """The card's document fields (see the module docstring)."""

    intended_use: str
    training_data: TrainingData
    git_revision: str | None
    git_clean: bool | None
    data_hash: str
    data_hash_of: list[str]


class HeldOutEvaluation(_Document):
    """The headline test metrics (``metrics/evaluate.json``) of the model folder, with the test set they come from."""

    split: str = "test"
    images: int
    patients: int
    prevalence: dict[str, float]
    weighted_log_loss: float | None
    weighted_log_loss_ci95: list[float] | None
    mean_subtype_auc: float | None
    auc: dict[str, float | None]
    auc_ci95: dict[str, list[float] | None]
    ci_method: str = "patient bootstrap, 95 % percentile interval"


def _prevalence(frame: pd.DataFrame) -> dict[str, float]:
    return {label: round(float(frame[label].mean()), 6) if len(frame) else 0.0 for label in LABELS}


def training_data(train: pd.DataFrame, augmented: pd.DataFrame, val: pd.DataFrame, image_size: int) -> TrainingData:
    """The summary of the split tables (``data/split/train.csv``, ``data/augmented.csv``, ``data/split/val.csv``)."""
    combined = pd.concat([train[list(LABELS)], augmented[list(LABELS)]], ignore_index=True)
    return TrainingData(
        image_size=image_size,
        train_images=len(train),
        augmented_copies=len(augmented),
        validation_images=len(val),
        train_patients=int(train["PatientID"].nunique()),
        train_series=int(train["SeriesInstanceUID"].nunique()),
        validation_patients=int(val["PatientID"].nunique()),
        train_prevalence=_prevalence(combined),
        validation_prevalence=_prevalence(val),
    )


def git_identity(
    root: str | os.PathLike = ".", code: Sequence[str] = ("ich", "stages", "params.yaml", "dvc.yaml")
) -> tuple[str | None, bool | None]:
    """The commit checked out in ``root`` and whether ``code`` is unchanged from it (None, None outside git)."""
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", *code], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return revision, not changed.stdout.strip()


def data_hash(paths: Sequence[str | os.PathLike]) -> str:
    """SHA-256 over the names and bytes of ``paths``, in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode() + b"\0" + Path(path).read_bytes())
    return digest.hexdigest()


def card_document(
    train: pd.DataFrame,
    augmented: pd.DataFrame,
    val: pd.DataFrame,
    image_size: int,
    tables: Sequence[str],
    root: str | os.PathLike = ".",
) -> dict[str, Any]:
    """The :class:`CardDocument` fields for the folder card, from the split tables (``tables``: their paths, hashed
    as the run's data hash: which images, with which labels)."""
    revision, clean = git_identity(root)
    return CardDocument(
        intended_use=INTENDED_USE,
        training_data=training_data(train, augmented, val, image_size),
        git_revision=revision,
        git_clean=clean,
        data_hash=data_hash(tables),
        data_hash_of=[str(path) for path in tables],
    ).model_dump()


def evaluation_summary(headline: Mapping[str, Any], test: pd.DataFrame) -> dict[str, Any]:
    """The model folder's :class:`HeldOutEvaluation` from the headline metrics and the test table."""
    return HeldOutEvaluation(
        images=len(test),
        patients=int(test["PatientID"].nunique()),
        prevalence=_prevalence(test),
        weighted_log_loss=headline.get("weighted_log_loss"),
        weighted_log_loss_ci95=headline.get("weighted_log_loss_ci95"),
        mean_subtype_auc=headline.get("mean_subtype_auc"),
        auc={label: headline.get(label, {}).get("auc") for label in LABELS},
        auc_ci95={label: headline.get(label, {}).get("auc_ci95") for label in LABELS},
    ).model_dump()


def read_evaluation(model_dir: str | os.PathLike) -> HeldOutEvaluation | None:
    """The folder's test evaluation, or None when it has none (evaluate has not run; a folder from elsewhere).

    Raises:
        ValueError: a file that is not a valid evaluation.
    """
    path = Path(model_dir) / EVALUATION_FILE
    if not path.is_file():
        return None
    try:
        return HeldOutEvaluation.model_validate(json.loads(path.read_text()))
    except ValueError as error:
        raise ValueError(f"{path} is not a valid test evaluation: {error}") from error


def document_of(card: Any) -> CardDocument | None:
    """The document fields of a folder card (a :class:`ich.models.card.ModelCard`, whose schema keeps them as extra
    fields), validated; None for a card written without them.

    Raises:
        ValueError: document fields that do not follow :class:`CardDocument`.
    """
    extra = dict(getattr(card, "model_extra", None) or {})
    if "intended_use" not in extra:
        return None
    fields = {name: extra[name] for name in CardDocument.model_fields if name in extra}
    try:
        return CardDocument.model_validate(fields)
    except ValueError as error:
        raise ValueError(f"The model card's document fields are not valid: {error}") from error
