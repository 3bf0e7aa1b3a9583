"""The model card: ``models/model.json``, which says how to load and use the networks beside it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ich.core.files import write_json
from ich.core.labels import LABELS

__all__ = ["MODEL_CARD", "model_card", "save_model_folder", "read_model_card", "folder_card"]

#: The JSON beside the model files that says how to use them.
MODEL_CARD = "model.json"


def model_card(
    arch: str,
    described: Mapping[str, Any],
    networks: Mapping[str, str],
    image_size: int,
    windows: list[dict[str, Any]],
    weights: str | None,
    thresholds: Mapping[str, float],
    combination: str = "product",
    gate_threshold: float = 0.5,
    **extra: Any,
) -> dict[str, Any]:
    """Everything needed to load the networks and feed them images as training did.

    Args:
        arch: the recipe's name (``model.arch``), which finds the code that predicts with the networks.
        described: what the recipe records about itself (:meth:`ich.models.recipes.Recipe.describe`).
        networks: ``{network name: file name}`` of the ``.keras`` files beside the card.
        image_size: input side in pixels; windows: ``preprocess.windows`` (R, G, B; HU).
        weights: the starting weights (``model.weights``).
        thresholds: per-label decision thresholds tuned on the validation split with ``combination``.
        combination, gate_threshold: how a cascade's stages combine (:func:`ich.models.combination.combine_cascade`).
        extra: further facts of the run (training images, positive weights, precision).
    """
    return {
        "arch": arch,
        **described,
        "weights": weights,
        "labels": list(LABELS),
        "image_size": int(image_size),
        "input_scaling": "RGB PNG / 255 -> [0, 1]; each model normalises for its backbone",
        "windows": list(windows),
        "combination": combination,
        "gate_threshold": float(gate_threshold),
        "thresholds": dict(thresholds),
        "thresholds_from": "best F1 on the validation split",
        "files": dict(networks),
        **extra,
    }


def save_model_folder(folder: str | os.PathLike, card: Mapping[str, Any], checkpoints: Mapping[str, str | os.PathLike]) -> Path:
    """Write the model folder: each network's best checkpoint under the file name the card gives it, then
    the card. ``checkpoints`` maps network names to finished ``.keras`` files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, filename in card["files"].items():
        shutil.copyfile(checkpoints[name], folder / filename)
    write_json(dict(card), folder / MODEL_CARD)
    return folder


def read_model_card(folder: str | os.PathLike) -> dict[str, Any]:
    """Read ``model.json``; its file names must be plain ``.keras`` names inside ``folder``.

    Raises:
        FileNotFoundError: when ``folder`` has no model card (train first, or point at a model folder).
        ValueError: when the card names a file outside the folder or of another kind.
    """
    path = Path(folder) / MODEL_CARD
    if not path.is_file():
        raise FileNotFoundError(f"No {MODEL_CARD} in {str(folder)!r}: run `dvc repro train` or point at a model folder.")
    card = json.loads(path.read_text(encoding="utf-8"))
    for filename in card["files"].values():
        if Path(filename).name != filename or not filename.endswith(".keras"):
            raise ValueError(f"{MODEL_CARD} names an unexpected model file: {filename!r}")
    return card



def folder_card(cnn_card: Mapping[str, Any], cnn_dir: str, sequence: Mapping[str, Any] | None) -> dict[str, Any]:
    """The card of a model folder whose CNN lies in the subfolder ``cnn_dir`` (its own card ``cnn_card``) and
    whose sequence model, when there is one, is described by ``sequence`` (``{"dir", "file", ...}``; ``None``:
    the CNN's predictions are final)."""
    card = {**cnn_card, "cnn_dir": cnn_dir, "sequence": dict(sequence) if sequence else None}
    if sequence and "thresholds" in sequence:  # the final predictions are the sequence model's
        card["cnn_thresholds"], card["thresholds"] = dict(cnn_card["thresholds"]), dict(sequence["thresholds"])
        card["thresholds_from"] = "best F1 of the sequence model's predictions on the validation split"
    return card
