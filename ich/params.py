"""Typed, validated sections of ``params.yaml``: unknown or missing keys are errors that name the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ParamsError",
    "load_params",
    "section",
    "DataParams",
    "SampleParams",
    "CopyParams",
    "PreprocessParams",
    "SplitParams",
    "ModelParams",
    "TrainParams",
    "EvaluateParams",
]

T = TypeVar("T")


class ParamsError(ValueError):
    """``params.yaml`` does not match what a stage expects."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read the whole params file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"No params file at {str(path)!r}. Run the stages from the repository root.")
    with path.open(encoding="utf-8") as stream:
        params = yaml.safe_load(stream) or {}
    if not isinstance(params, dict):
        raise ParamsError(f"{str(path)!r} must hold a mapping of sections. Received: {type(params).__name__}")
    return params


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(name, value, option)
            except ParamsError as error:
                errors.append(str(error))
        raise ParamsError(errors[0] if errors else f"`{name}` has an invalid value: {value!r}")
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation in (str, bool, list, dict) and isinstance(value, annotation):
        return value
    if origin in (list, tuple) and isinstance(value, list):
        return tuple(value) if origin is tuple else value
    if (origin is dict or annotation is dict) and isinstance(value, dict):
        return value
    if annotation is Any:
        return value
    expected = getattr(annotation, "__name__", str(annotation))
    raise ParamsError(f"`{name}` must be of type {expected}. Received: {value!r}")


def section(params: dict[str, Any], name: str, cls: type[T]) -> T:
    """Build dataclass ``cls`` from ``params[name]``, rejecting unknown, missing or mistyped keys."""
    raw = params.get(name)
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml needs a `{name}:` section (a mapping). Received: {raw!r}")
    fields = {field.name: field for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(
            f"Unknown key(s) in `{name}`: {', '.join(unknown)}. Expected: {', '.join(fields)}."
        )
    missing = sorted(set(fields) - set(raw))
    if missing:
        raise ParamsError(f"Missing key(s) in `{name}`: {', '.join(f'{name}.{key}' for key in missing)}.")
    hints = typing.get_type_hints(cls)
    values = {key: _check_type(f"{name}.{key}", raw[key], hints[key]) for key in fields}
    try:
        return cls(**values)
    except ValueError as error:
        raise ParamsError(f"Invalid `{name}` params: {error}") from error


@dataclass(frozen=True)
class DataParams:
    """Where the RSNA-layout source lives: the long labels CSV and the folder of ``<ID>.dcm``."""

    labels_csv: str
    dicom_dir: str


@dataclass(frozen=True)
class SampleParams:
    per_label: int
    seed: int

    def __post_init__(self) -> None:
        if self.per_label <= 0:
            raise ValueError(f"`sample.per_label` must be > 0. Received: {self.per_label}")


@dataclass(frozen=True)
class CopyParams:
    workers: int

    def __post_init__(self) -> None:
        if self.workers <= 0:
            raise ValueError(f"`copy.workers` must be > 0. Received: {self.workers}")


@dataclass(frozen=True)
class PreprocessParams:
    image_size: int
    windows: list
    max_quarantine_fraction: float
    workers: int
    pseudonymize_ids: bool
    rsna_pixel_fix: str
    file_timeout_s: float

    def __post_init__(self) -> None:
        from ich.dicom import RSNA_PIXEL_FIX_MODES

        if self.rsna_pixel_fix not in RSNA_PIXEL_FIX_MODES:
            raise ValueError(
                f"`preprocess.rsna_pixel_fix` must be one of {', '.join(RSNA_PIXEL_FIX_MODES)}. "
                f"Received: {self.rsna_pixel_fix!r}"
            )
        if not self.file_timeout_s > 0:
            raise ValueError(f"`preprocess.file_timeout_s` must be > 0 seconds. Received: {self.file_timeout_s}")
        if not 16 <= self.image_size <= 2048:
            raise ValueError(f"`preprocess.image_size` must be in [16, 2048]. Received: {self.image_size}")
        if not 0.0 <= self.max_quarantine_fraction <= 1.0:
            raise ValueError(
                f"`preprocess.max_quarantine_fraction` must be in [0, 1]. Received: {self.max_quarantine_fraction}"
            )
        if self.workers < 0:
            raise ValueError(f"`preprocess.workers` must be >= 0 (0 = all cores). Received: {self.workers}")


@dataclass(frozen=True)
class SplitParams:
    seed: int
    train_fraction: float
    val_fraction: float
    test_fraction: float

    def __post_init__(self) -> None:
        fractions = (self.train_fraction, self.val_fraction, self.test_fraction)
        if min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(
                "`split.train_fraction`, `val_fraction` and `test_fraction` must be >= 0 and sum to 1. "
                f"Received: {fractions}"
            )


@dataclass(frozen=True)
class ModelParams:
    """`model`: which architecture, which backbones, which starting weights."""

    arch: str
    efficientnet: str
    convnext: str
    weights: str | None
    dropout: float
    fusion_units: int
    online_augmentation: bool

    def __post_init__(self) -> None:
        from ich.models import ARCHS, backbone_names

        if self.arch not in ARCHS:
            raise ValueError(f"`model.arch` must be one of {', '.join(ARCHS)}. Received: {self.arch!r}")
        if self.efficientnet not in backbone_names("efficientnetv2"):
            raise ValueError(
                f"`model.efficientnet` must be one of {', '.join(backbone_names('efficientnetv2'))}. "
                f"Received: {self.efficientnet!r}"
            )
        if self.convnext not in backbone_names("convnext"):
            raise ValueError(
                f"`model.convnext` must be one of {', '.join(backbone_names('convnext'))}. Received: {self.convnext!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`model.dropout` must be in [0, 1). Received: {self.dropout}")


@dataclass(frozen=True)
class TrainParams:
    """`train`: epochs, batch, learning rates, imbalance handling and the runtime switches."""

    seed: int
    epochs: int
    head_epochs: int
    batch_size: int
    learning_rate: float
    finetune_learning_rate: float
    early_stopping_patience: int
    positive_weights: bool
    max_positive_weight: float
    mixed_precision: str | bool
    jit_compile: str | bool
    strategy: str
    deterministic: bool
    cache_images: bool

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"`train.epochs` and `train.batch_size` must be >= 1. Received: {self.epochs}, {self.batch_size}")
        if self.head_epochs < 0 or self.early_stopping_patience < 1:
            raise ValueError("`train.head_epochs` must be >= 0 and `train.early_stopping_patience` >= 1")
        if self.learning_rate <= 0 or self.finetune_learning_rate <= 0:
            raise ValueError("`train.learning_rate` and `train.finetune_learning_rate` must be > 0")


@dataclass(frozen=True)
class EvaluateParams:
    """`evaluate`: how the cascade's stages combine and the decision threshold."""

    combination: str
    gate_threshold: float
    threshold: float
    montage_images: int

    def __post_init__(self) -> None:
        from ich.evaluation import COMBINATIONS

        if self.combination not in COMBINATIONS:
            raise ValueError(f"`evaluate.combination` must be one of {', '.join(COMBINATIONS)}. Received: {self.combination!r}")
        if not (0 < self.threshold < 1 and 0 < self.gate_threshold < 1):
            raise ValueError("`evaluate.threshold` and `evaluate.gate_threshold` must be in (0, 1)")
