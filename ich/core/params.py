"""Typed, validated sections of ``params.yaml`` (pydantic v2): unknown, missing or mistyped keys are errors
that name the key, as ``preprocess.image_size``.

Every section is a frozen model with ``extra="forbid"``; :func:`section` loads one section and turns
pydantic's errors into one :class:`ParamsError` naming each offending key, what was expected and what was
received. Stages pass plain values from these objects down to the library.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ich.core.errors import PipelineError

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

__all__ = [
    "ParamsError",
    "load_params",
    "section",
    "DataParams",
    "SynthesizeParams",
    "IndexParams",
    "SampleParams",
    "CopyParams",
    "WindowParams",
    "PreprocessParams",
    "SplitParams",
    "AugmentParams",
    "ModelParams",
    "TrainParams",
    "EvaluateParams",
]


class ParamsError(PipelineError, ValueError):
    """``params.yaml`` does not match what a stage expects."""


class _Section(BaseModel):
    """A section of params.yaml: every key known, typed strictly (no "3" for 3, no 1 for true)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Section = TypeVar("Section", bound=_Section)


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


def _describe(name: str, error: ErrorDetails) -> str:
    key = ".".join([name, *(str(part) for part in error["loc"])])
    if error["type"] == "extra_forbidden":
        return f"unknown key `{key}`"
    if error["type"] == "missing":
        return f"missing key `{key}`"
    message = error["msg"].removeprefix("Value error, ")
    return f"`{key}`: {message}" + (f". Received: {error['input']!r}" if error["loc"] else "")


def section(params: dict[str, Any], name: str, cls: type[Section]) -> Section:
    """Build model ``cls`` from ``params[name]``; every key of ``cls`` must be present in the file.

    Raises:
        ParamsError: naming each unknown, missing, mistyped or out-of-range key.
    """
    raw = params.get(name)
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml needs a `{name}:` section (a mapping). Received: {raw!r}")
    fields = list(cls.model_fields)
    # Defaults serve code that builds a section directly; the params file must spell out every key.
    problems = [f"missing key `{name}.{key}`" for key in fields if key not in raw]
    try:
        loaded = cls.model_validate(raw)
    except ValidationError as error:
        problems += [_describe(name, item) for item in error.errors() if item["type"] != "missing" or len(item["loc"]) > 1]
    if problems:
        keys = any(problem.startswith(("unknown", "missing")) for problem in problems)
        hint = f" Expected keys: {', '.join(fields)}." if keys else ""
        raise ParamsError(f"Invalid `{name}` params: {'; '.join(problems)}.{hint}")
    return loaded


Fraction = Field(ge=0.0, le=1.0)


class DataParams(_Section):
    """Where the RSNA-layout source lives: the long labels CSV and the folder of ``<ID>.dcm``."""

    labels_csv: str
    dicom_dir: str


class SynthesizeParams(_Section):
    """`synthesize`: sizes and quirks of the synthetic set. Fractions are of series; counts are absolute."""

    seed: int = 2019
    patients: int = Field(100, ge=1)
    slices_per_series: int = Field(20, ge=3)
    image_size: int = Field(256, ge=32)
    second_study_fraction: float = Field(0.15, ge=0.0, le=1.0)
    hemorrhage_fraction: float = Field(0.5, ge=0.0, le=1.0)
    subtype_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "epidural": 0.07,
            "intraparenchymal": 0.24,
            "intraventricular": 0.18,
            "subarachnoid": 0.25,
            "subdural": 0.26,
        }
    )
    wrapped_fraction: float = Field(0.1, ge=0.0, le=1.0)
    nonsquare_fraction: float = Field(0.1, ge=0.0, le=1.0)
    multivalued_window_fraction: float = Field(0.3, ge=0.0, le=1.0)
    corrupt_files: int = Field(1, ge=0)
    missing_files: int = Field(1, ge=0)
    duplicate_rows: int = Field(30, ge=0)
    invalid_id_images: int = Field(1, ge=0)

    @field_validator("subtype_weights")
    @classmethod
    def _known_subtypes(cls, weights: dict[str, float]) -> dict[str, float]:
        from ich.core.labels import SUBTYPES

        unknown = sorted(set(weights) - set(SUBTYPES))
        if unknown:
            raise ValueError(f"unknown subtypes {unknown}; expected some of {', '.join(SUBTYPES)}")
        if any(weight < 0 for weight in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("weights must be >= 0 and not all 0")
        return weights


class IndexParams(_Section):
    """`index`: the header scan of every labelled DICOM."""

    workers: int = Field(ge=0)  # processes; 0 = all cores
    # Replace PatientID and the Study/Series UIDs by keyed hashes (secret in ICH_PSEUDONYM_KEY).
    pseudonymize_ids: bool


class SampleParams(_Section):
    """`sample`: the balanced training set (whole series) and how val/test are drawn."""

    per_label: int = Field(gt=0)
    seed: int
    holdout: Literal["natural", "enriched"]


class CopyParams(_Section):
    workers: int = Field(gt=0)
    # link: data/dicom/ holds a hardlink (or copy) of every sampled DICOM, tracked by DVC; manifest: it holds only
    # manifest.csv (ID, size, SHA-256 of each sampled file) and preprocess reads data.dicom_dir, checking each file.
    mode: Literal["link", "manifest"] = "link"


class WindowParams(_Section):
    """One display window of ``preprocess.windows`` (center/width in HU)."""

    name: str
    center: float
    width: float = Field(gt=0)


class PreprocessParams(_Section):
    image_size: int = Field(ge=16, le=2048)
    windows: tuple[WindowParams, WindowParams, WindowParams]
    max_quarantine_fraction: float = Field(ge=0.0, le=1.0)
    workers: int = Field(ge=0)  # 0 = all cores
    rsna_pixel_fix: Literal["auto", "off"]
    file_timeout_s: float = Field(gt=0)  # seconds one file may take before it is quarantined
    # files: data/png/<ID>.png; shards: tar shards of PNGs + data/png/shards.csv (ich.core.images)
    layout: Literal["files", "shards"] = "files"
    images_per_shard: int = Field(default=1000, ge=1)

    @field_validator("windows", mode="before")
    @classmethod
    def _three_windows(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ValueError("must list exactly three windows (red, green, blue), each {name, center, width}")
        return tuple(value)

    def window_dicts(self) -> list[dict[str, Any]]:
        """``preprocess.windows`` as plain dicts (R, G, B order), as params.yaml writes them."""
        return [window.model_dump() for window in self.windows]


class SplitParams(_Section):
    seed: int
    train_fraction: float = Fraction
    val_fraction: float = Fraction
    test_fraction: float = Fraction
    max_val_series: int | None = Field(ge=1)  # null: every series of the validation patients
    max_test_series: int | None = Field(ge=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitParams:
        fractions = (self.train_fraction, self.val_fraction, self.test_fraction)
        if abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(f"train_fraction, val_fraction and test_fraction must sum to 1. Received: {fractions}")
        return self


class AugmentParams(_Section):
    """`augment`: probabilities in [0, 1], limits in degrees or fractions."""

    seed: int
    target_per_label: int = Field(ge=0)
    max_copies_per_image: int = Field(ge=0)
    hflip_p: float = Fraction
    vflip_p: float = Fraction
    rotate_limit: float
    rotate_p: float = Fraction
    brightness_limit: float
    contrast_limit: float
    brightness_contrast_p: float = Fraction
    blur_limit: int
    blur_p: float = Fraction
    elastic_alpha: float
    elastic_sigma: float
    elastic_p: float = Fraction

    @field_validator("blur_limit")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value < 3 or value % 2 == 0:
            raise ValueError("must be an odd kernel size >= 3")
        return value


class ModelParams(_Section):
    """`model`: which recipe (``arch``), which backbones, which starting weights.

    The schema checks types and ranges only: the recipe registry checks ``arch`` (:func:`ich.models.recipes.get_recipe`)
    and the backbone table the backbone names, each listing the choices, when the train stage starts.
    """

    arch: str
    efficientnet: str
    convnext: str
    weights: str | None
    dropout: float = Field(ge=0.0, lt=1.0)
    fusion_units: int = Field(ge=2)
    online_augmentation: bool
    # How a cascade's two stages give the final subtype probabilities (see ich.models.combination.combine_cascade);
    # the validation thresholds are tuned with it, and the model card carries both to inference.
    combination: Literal["product", "gate"]
    gate_threshold: float = Field(gt=0.0, lt=1.0)
    # 2.5D input: 0 = one slice; k = each image takes its green (brain) window from the slice k before it along
    # z and its blue (bone) window from the slice k after it (ich.data.context).
    context_slices: int = Field(ge=0, le=8)


Switch = Literal["auto"] | bool


class TrainParams(_Section):
    """`train`: epochs, batch, learning rates, imbalance handling and the runtime switches."""

    seed: int
    epochs: int = Field(ge=1)
    head_epochs: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    finetune_learning_rate: float = Field(gt=0)
    early_stopping_patience: int = Field(ge=1)
    positive_weights: bool
    max_positive_weight: float = Field(ge=1.0)
    mixed_precision: Switch
    jit_compile: Switch
    strategy: Literal["auto", "default", "mirrored", "multi_worker"]
    deterministic: bool
    cache_images: bool | Literal["auto"]  # auto: what fits cache_budget_gb (train first, then val)
    cache_budget_gb: float = Field(default=8.0, gt=0)
    # The most advanced instruction set oneDNN may use on a CPU (ONEDNN_MAX_CPU_ISA, set by dvc.yaml's command):
    # one fixed level gives the same numbers on every CPU that has it; ALL lets each CPU use its fastest.
    onednn_max_cpu_isa: Literal[
        "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_AMX", "ALL"
    ]


class SequenceParams(_Section):
    """`sequence`: the bidirectional GRU over each series on the frozen CNN's features (ich.models.sequence)."""

    enabled: bool
    seed: int
    epochs: int = Field(ge=1)
    early_stopping_patience: int = Field(ge=1)
    batch_series: int = Field(ge=1)  # series per batch
    learning_rate: float = Field(gt=0.0)
    units: int = Field(ge=1)  # GRU units each way
    layers: int = Field(ge=1)
    projection: int = Field(ge=1)  # width the pooled CNN features are projected to
    dropout: float = Field(ge=0.0, lt=1.0)
    crop: int = Field(ge=0)  # longest random crop of a training series; 0 = whole series
    reverse_p: float = Fraction  # chance a training series is read backwards
    batch_size: int = Field(ge=1)  # images per batch when extracting the CNN's features


class EvaluateParams(_Section):
    """`evaluate`: the fixed decision threshold, the bootstrap of the confidence intervals, the montage."""

    threshold: float = Field(gt=0.0, lt=1.0)
    bootstrap_draws: int = Field(ge=0)  # patient-level resamples for the 95 % intervals; 0 = none
    seed: int
    montage_images: int = Field(ge=0)


def context_slices(params: dict[str, Any]) -> int:
    """``model.context_slices`` alone (2.5D input: 0 = one slice; k = neighbours k slices away along z), for the
    stages that compose slices without building a model (augment): the rest of ``model:`` is the train stage's."""
    raw = params.get("model")
    value = raw.get("context_slices") if isinstance(raw, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 8:
        raise ParamsError(f"`model.context_slices` must be an integer from 0 to 8. Received: {value!r}")
    return value
