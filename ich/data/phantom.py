"""The synthetic head phantom: one axial CT slice in HU with its hemorrhages drawn where each type lies.

An ellipsoidal head: air, scalp, skull (bone HU with a softer diploe), brain with grey/white texture and noise,
sulci and lateral ventricles (CSF). Hemorrhages are acute blood (50-90 HU) in their characteristic place and shape
and span adjacent slices (see :mod:`ich.data.synth`, which writes the slices as an RSNA-layout data set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ich.core.labels import ANY, SUBTYPES
from ich.core.params import SynthesizeParams

__all__ = ["Lesion", "SliceMasks", "render_slice", "render_slice_with_masks", "draw_lesions", "smooth_field"]

_SKULL_INNER = 0.92  # radius (in head units) of the inner table
_SCALP_OUTER = 1.05
_BLOOD_HU = (60.0, 90.0)


@dataclass(frozen=True)
class Lesion:
    """One hemorrhage: its subtype, the slice range it spans and its in-plane shape parameters."""

    subtype: str
    z_center: float  # in slice-index units
    z_half: float
    angle: float  # radians, where it touches the skull / which sector
    size: float  # in head-radius units
    offset: tuple[float, float] = (0.0, 0.0)  # intraparenchymal centre (head units)
    hu: float = 70.0

    def scale_at(self, z: float) -> float:
        """In-plane size factor on slice ``z``: 1 at the centre, 0 outside the span."""
        t = (z - self.z_center) / self.z_half
        return math.sqrt(1.0 - t * t) if abs(t) < 1.0 else 0.0


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-std smooth noise: a coarse random grid upsampled bicubically."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    smooth = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (smooth - smooth.mean()) / (smooth.std() + 1e-6)


@dataclass(frozen=True)
class SliceMasks:
    """Where a slice's hemorrhages were drawn, at the DICOM's pixel grid ``(rows, columns)``.

    Attributes:
        lesions: ``{subtype: bool mask}`` for each subtype drawn on the slice (absent: not drawn, label 0);
            pixels a later lesion painted over stay in the earlier lesion's mask (they are blood either way).
        brain: bool mask of the intracranial space (inside the skull's inner table).
    """

    lesions: dict[str, np.ndarray]
    brain: np.ndarray

    def label(self, label: str) -> np.ndarray:
        """The bool mask of ``label``: one subtype's, or for ``any`` the union of all (empty when not drawn)."""
        if label == ANY:
            union = np.zeros_like(self.brain)
            for mask in self.lesions.values():
                union |= mask
            return union
        if label not in SUBTYPES:
            raise ValueError(f"`label` must be one of {ANY}, {', '.join(SUBTYPES)}. Received: {label!r}")
        return self.lesions.get(label, np.zeros_like(self.brain))


def render_slice(
    rows: int,
    columns: int,
    z_fraction: float,
    z_index: float,
    lesions: list[Lesion],
    head: tuple[float, float, float, float],
    texture: np.ndarray,
    rng: np.random.Generator,
    min_pixels: int = 1,
) -> tuple[np.ndarray, dict[str, int]]:
    """Draw one axial slice in HU (see :func:`render_slice_with_masks`, which also says where the lesions went)."""
    hu, counts, _ = render_slice_with_masks(rows, columns, z_fraction, z_index, lesions, head, texture, rng, min_pixels)
    return hu, counts


def render_slice_with_masks(
    rows: int,
    columns: int,
    z_fraction: float,
    z_index: float,
    lesions: list[Lesion],
    head: tuple[float, float, float, float],
    texture: np.ndarray,
    rng: np.random.Generator,
    min_pixels: int = 1,
) -> tuple[np.ndarray, dict[str, int], SliceMasks]:
    """Draw one axial slice in HU.

    Args:
        rows, columns: image size in pixels.
        z_fraction: position from skull base (0) to vertex (1).
        z_index: slice index (lesion spans are in these units).
        lesions: the patient's hemorrhages.
        head: ``(centre_x, centre_y, semi_axis_x, semi_axis_y)`` in pixels at the widest level.
        texture: a smooth ``(rows, columns)`` field for the grey/white pattern.
        rng: noise source.
        min_pixels: a lesion's cross-section smaller than this is left out (and so not labelled).

    Returns:
        ``(HU image (rows, columns) float32, {subtype: lesion pixel count}, the slice's masks)``.
    """
    cx, cy, ax, ay = head
    level = max(0.2, math.sqrt(max(0.0, 1.0 - ((z_fraction - 0.45) / 0.62) ** 2)))
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    u = (x - cx) / (ax * level)
    v = (y - cy) / (ay * level)
    radius = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)

    hu = np.full((rows, columns), -1000.0, dtype=np.float32)
    hu[(radius >= 1.0) & (radius < _SCALP_OUTER)] = 35.0
    skull = (radius >= _SKULL_INNER) & (radius < 1.0)
    diploe = np.abs(radius - (1.0 + _SKULL_INNER) / 2) < 0.015
    hu[skull] = 1300.0
    hu[skull & diploe] = 650.0
    brain = radius < _SKULL_INNER
    grey = radius > _SKULL_INNER - 0.08
    hu[brain] = 28.0 + 3.0 * texture[brain]
    hu[brain & grey] = 38.0 + 2.0 * texture[brain & grey]
    sulci = brain & (radius > _SKULL_INNER - 0.18) & (np.sin(12.0 * theta + 8.0 * radius + 2.0 * texture) > 0.6)
    hu[sulci] = 8.0
    vent_scale = math.sqrt(max(0.0, 1.0 - ((z_fraction - 0.5) / 0.2) ** 2))
    ventricles = np.zeros_like(brain)
    if vent_scale > 0:
        for side in (-1.0, 1.0):
            du, dv = (u - side * 0.11) / (0.07 * vent_scale + 1e-6), (v + 0.04) / (0.26 * vent_scale + 1e-6)
            ventricles |= (du * du + dv * dv) < 1.0
        hu[ventricles] = 6.0

    counts: dict[str, int] = {}
    drawn: dict[str, np.ndarray] = {}
    for lesion in lesions:
        scale = lesion.scale_at(z_index)
        if scale <= 0:
            continue
        angle_delta = np.angle(np.exp(1j * (theta - lesion.angle)))
        if lesion.subtype == "epidural":
            half = 0.5 * scale + 0.1
            thickness = lesion.size * math.sqrt(scale) * np.clip(1.0 - (angle_delta / half) ** 2, 0.0, None)
            mask = brain & (np.abs(angle_delta) < half) & (radius > _SKULL_INNER - thickness)
        elif lesion.subtype == "subdural":
            half = 1.2 * scale + 0.2
            thickness = lesion.size * math.sqrt(scale) * np.clip(1.0 - (angle_delta / half) ** 4, 0.0, None)
            mask = brain & (np.abs(angle_delta) < half) & (radius > _SKULL_INNER - thickness)
        elif lesion.subtype == "intraparenchymal":
            du, dv = u - lesion.offset[0], v - lesion.offset[1]
            local = np.sqrt(du * du + dv * dv)
            wobble = 1.0 + 0.25 * np.sin(3.0 * np.arctan2(dv, du) + lesion.angle)
            mask = brain & (local < lesion.size * scale * wobble)
        elif lesion.subtype == "intraventricular":
            mask = ventricles & (v > -0.04 + 0.26 * vent_scale * (0.2 - lesion.size * scale))
        else:  # subarachnoid
            mask = sulci & (np.abs(angle_delta) < 0.6 + 0.8 * scale)
        area = int(mask.sum())
        if area < min_pixels:
            continue  # a sliver nobody could see is neither drawn nor labelled
        hu[mask] = lesion.hu + 4.0 * texture[mask]
        counts[lesion.subtype] = counts.get(lesion.subtype, 0) + area
        drawn[lesion.subtype] = drawn[lesion.subtype] | mask if lesion.subtype in drawn else mask
    hu += rng.normal(0.0, 3.0, size=hu.shape).astype(np.float32)
    return hu, counts, SliceMasks(lesions=drawn, brain=brain)


def draw_lesions(rng: np.random.Generator, config: SynthesizeParams, slices: int) -> list[Lesion]:
    if rng.random() >= config.hemorrhage_fraction:
        return []
    names = list(config.subtype_weights)
    weights = np.array([config.subtype_weights[name] for name in names], dtype=float)
    weights /= weights.sum()
    # Several bleeds at different levels, so a patient's slices carry different subtypes and a model
    # cannot read the subtype off the patient's anatomy.
    count = 1 + min(rng.poisson(1.2), 3)
    lesions = []
    for subtype in rng.choice(names, size=count, p=weights):
        z_half = float(rng.uniform(0.15, 0.3) * slices)
        if subtype == "intraventricular":
            # the ventricles exist only around the middle of the head
            z_center = float(rng.uniform(0.42, 0.58) * (slices - 1))
        else:
            z_center = float(rng.uniform(0.25, 0.75) * (slices - 1))
        sizes = {
            "epidural": (0.18, 0.28),
            "subdural": (0.07, 0.11),
            "intraparenchymal": (0.10, 0.18),
            "intraventricular": (0.0, 0.15),
            "subarachnoid": (0.0, 0.0),
        }[str(subtype)]
        radius = rng.uniform(0.3, 0.6)
        direction = rng.uniform(-math.pi, math.pi)
        lesions.append(
            Lesion(
                subtype=str(subtype),
                z_center=z_center,
                z_half=z_half,
                angle=float(rng.uniform(-math.pi, math.pi)),
                size=float(rng.uniform(*sizes)),
                offset=(float(radius * math.cos(direction)), float(radius * math.sin(direction))),
                hu=float(rng.uniform(*_BLOOD_HU)),
            )
        )
    return lesions
