"""The model card: ``models/model.json``, which says how to load and use the networks beside it.

:class:`ModelCard` is the card's schema, with every default in one place: what the train stage writes, what the
sequence stage adds, and what inference reads. Cards written before a field existed read with its default; a
card that names a file outside its folder, or whose values have the wrong type, is refused with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ich.core.files import write_json
from ich.core.labels import LABELS

__all__ = ["MODEL_CARD", "ModelCard", "SequenceEntry", "model_card", "save_model_folder", "read_model_card", "folder_card"]

#: The JSON beside the model files that says how to use them.
MODEL_CARD = "model.json"
_INPUT_SCALING = "RGB PNG / 255 -> [0, 1]; each model normalises for its backbone"


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _plain_file(name: str, suffix: str) -> str:
    if not _PLAIN_NAME.fullmatch(name) or not name.endswith(suffix):
        raise ValueError(f"must be a plain {suffix} file name inside the model folder. Received: {name!r}")
    return name


def _plain_folder(name: str) -> str:
    if not _PLAIN_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"must be a plain subfolder name of the model folder. Received: {name!r}")
    return name


class SequenceEntry(BaseModel):
    """The sequence model of a model folder: its subfolder and file, its settings and its tuned thresholds."""

    model_config = ConfigDict(extra="allow", frozen=True)

    dir: str
    file: str
    thresholds: dict[str, float] | None = None

    @field_validator("dir")
    @classmethod
    def _plain_dir(cls, value: str) -> str:
        return _plain_folder(value)

    @field_validator("file")
    @classmethod
    def _keras_file(cls, value: str) -> str:
        return _plain_file(value, ".keras")


class ModelCard(BaseModel):
    """Everything needed to load a model folder's networks and feed them images as training did.

    Attributes:
        arch: the recipe's name (``model.arch``), which finds the code that predicts with the networks.
        files: ``{network name: file name}`` of the ``.keras`` files (in ``cnn_dir`` when set).
        image_size: input side in pixels; windows: ``preprocess.windows`` (R, G, B; HU).
        thresholds: per-label decision thresholds of the final predictions, tuned on the validation split.
        cnn_thresholds: the CNN's own thresholds when a sequence model makes the final predictions.
        combination, gate_threshold: how a cascade's stages combine (:func:`ich.models.combination.combine_cascade`).
        context_slices: 2.5D input (0 = one slice). rsna_pixel_fix: how stored pixels were read.
        Recipe-specific facts (``backbones``, ``warm_start``) and facts of the run (``train_images``,
        ``positive_weights``, ``mixed_precision``) are kept as further fields.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    arch: str
    files: dict[str, str]
    image_size: int
    windows: list[dict[str, Any]]
    thresholds: dict[str, float]
    weights: str | None = None
    labels: list[str] = list(LABELS)
    input_scaling: str = _INPUT_SCALING
    combination: Literal["product", "gate"] = "product"
    gate_threshold: float = 0.5
    thresholds_from: str = "best F1 on the validation split"
    context_slices: int = 0
    rsna_pixel_fix: Literal["auto", "off"] = "auto"
    cnn_dir: str | None = None
    cnn_thresholds: dict[str, float] | None = None
    sequence: SequenceEntry | None = None

    @field_validator("files")
    @classmethod
    def _keras_files(cls, value: dict[str, str]) -> dict[str, str]:
        return {name: _plain_file(filename, ".keras") for name, filename in value.items()}

    @field_validator("cnn_dir")
    @classmethod
    def _plain_dir(cls, value: str | None) -> str | None:
        return None if value is None else _plain_folder(value)

    def to_json(self) -> dict[str, Any]:
        """The card as written to ``model.json`` (``None`` fields that were never set are left out)."""
        return self.model_dump(mode="json", exclude_unset=False)


def model_card(
    *,
    arch: str,
    described: Mapping[str, Any],
    networks: Mapping[str, str],
    image_size: int,
    windows: list[dict[str, Any]],
    weights: str | None,
    thresholds: Mapping[str, float],
    combination: Literal["product", "gate"] = "product",
    gate_threshold: float = 0.5,
    **extra: Any,
) -> ModelCard:
    """The train stage's card. ``described`` is what the recipe records about itself
    (:meth:`ich.models.recipes.base.Recipe.describe`); ``extra`` holds further facts of the run."""
    return ModelCard(
        arch=arch,
        **described,
        weights=weights,
        image_size=int(image_size),
        windows=list(windows),
        combination=combination,
        gate_threshold=float(gate_threshold),
        thresholds=dict(thresholds),
        files=dict(networks),
        **extra,
    )


def save_model_folder(folder: str | os.PathLike, card: ModelCard, checkpoints: Mapping[str, str | os.PathLike]) -> Path:
    """Write the model folder: each network's best checkpoint under the file name the card gives it, then
    the card. ``checkpoints`` maps network names to finished ``.keras`` files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, filename in card.files.items():
        shutil.copyfile(checkpoints[name], folder / filename)
    write_json(card.to_json(), folder / MODEL_CARD)
    return folder


def read_model_card(folder: str | os.PathLike) -> ModelCard:
    """Read and validate ``model.json``.

    Raises:
        FileNotFoundError: when ``folder`` has no model card (train first, or point at a model folder).
        ValueError: when the card is not valid JSON of the schema, or names a file outside the folder or of another kind.
    """
    path = Path(folder) / MODEL_CARD
    if not path.is_file():
        raise FileNotFoundError(f"No {MODEL_CARD} in {str(folder)!r}: run `dvc repro train` or point at a model folder.")
    try:
        return ModelCard.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
        raise ValueError(f"{path} is not a valid model card: {problems}") from None


def folder_card(cnn_card: ModelCard, cnn_dir: str, sequence: Mapping[str, Any] | None) -> ModelCard:
    """The card of a model folder whose CNN lies in the subfolder ``cnn_dir`` (its own card ``cnn_card``) and
    whose sequence model, when there is one, is described by ``sequence`` (``{"dir", "file", ...}``; ``None``:
    the CNN's predictions are final)."""
    update: dict[str, Any] = {"cnn_dir": cnn_dir, "sequence": SequenceEntry(**sequence) if sequence else None}
    if sequence and sequence.get("thresholds"):  # the final predictions are the sequence model's
        update.update(
            cnn_thresholds=dict(cnn_card.thresholds),
            thresholds=dict(sequence["thresholds"]),
            thresholds_from="best F1 of the sequence model's predictions on the validation split",
        )
    return ModelCard.model_validate({**cnn_card.to_json(), **update})
