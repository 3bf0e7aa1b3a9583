"""Benchmark: the pointing game (Zhang et al. 2016, arXiv:1608.00507) for the Grad-CAM maps of ``ich.inference.explain``.

For every true-positive test slice of a label (labelled positive and predicted at or above the model card's
tuned threshold for it), the Grad-CAM map of that label is computed and its maximum checked against where the
synthesizer drew that label's blood (``any``: every lesion of the slice): a hit when the maximum lies within
``--tolerance`` pixels (Euclidean, at the model's image size) of a lesion pixel. The masks are regenerated
from the ``synthesize`` params (:func:`ich.data.synth.lesion_masks`) and mapped to the image grid as preprocess
maps the slices (:func:`ich.data.synth.mask_to_image`: pad to square, area-resize; a pixel is lesion when any
lesion pixel falls in its footprint). Needs the synthetic data set: RSNA has no lesion masks.

Also the energy-based variant: the share of the map's mass inside the skull that lies on the (dilated) lesion.
Baseline for both: the chance that a pixel drawn uniformly inside the skull hits, i.e. the share of the
intracranial area within the tolerance of the lesion, averaged over the same slices; a map no better than
chance scores about that (a map spread evenly over the brain has exactly that energy).

    python -m benchmarks.pointing_game --models models --split data/split/test.csv --png-dir data/png \\
        --params params.yaml [--tolerance 2] [--level 0] [--json metrics/pointing_game.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ich.core.ids import validate_id
from ich.core.labels import LABELS
from ich.core.params import SynthesizeParams, load_params, section
from ich.data.synth import lesion_masks, mask_to_image
from ich.inference.explain import auto_level, gradcam_network
from ich.inference.loading import image_batches, load_models

__all__ = ["dilate", "pointing_location", "is_hit", "chance_of_hit", "energy_inside", "pointing_game", "main"]


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Every pixel within Euclidean distance ``radius`` (pixels) of a True pixel of the 2-D bool ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return mask.copy()
    offsets = np.arange(-radius, radius + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius).astype(np.uint8)
    return cv2.dilate(mask.astype(np.uint8), disk, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def pointing_location(heatmap: np.ndarray) -> tuple[int, int]:
    """``(row, column)`` of the heat map's maximum. Where several pixels share it (a coarse map upsampled is flat
    next to its border), the one nearest to their centroid, so no corner of the plateau is favoured."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    rows, columns = np.nonzero(heatmap >= heatmap.max())
    if len(rows) == 1:
        return int(rows[0]), int(columns[0])
    nearest = int(np.argmin((rows - rows.mean()) ** 2 + (columns - columns.mean()) ** 2))
    return int(rows[nearest]), int(columns[nearest])


def is_hit(heatmap: np.ndarray, mask: np.ndarray, tolerance: int) -> bool:
    """True when the heat map's :func:`pointing_location` lies within ``tolerance`` pixels of ``mask``."""
    row, column = pointing_location(heatmap)
    return bool(dilate(mask, tolerance)[row, column])


def chance_of_hit(mask: np.ndarray, brain: np.ndarray, tolerance: int) -> float:
    """The share of the ``brain`` pixels within ``tolerance`` pixels of ``mask``: the hit rate of a pointer that
    picks a pixel inside the skull at random."""
    brain = np.asarray(brain, dtype=bool)
    if not brain.any():
        raise ValueError("The brain mask is empty: no pixel to point at")
    return float((dilate(mask, tolerance) & brain).sum() / brain.sum())


def energy_inside(heatmap: np.ndarray, mask: np.ndarray, brain: np.ndarray, tolerance: int) -> float | None:
    """The share of the heat map's mass inside the ``brain`` that lies within ``tolerance`` pixels of ``mask``
    (an energy-based pointing game, which a coarse map's flat maxima cannot tip); None for a map with no mass
    there. A map spread evenly over the brain scores :func:`chance_of_hit`."""
    heat = np.asarray(heatmap, dtype=np.float64) * np.asarray(brain, dtype=bool)
    total = heat.sum()
    if total <= 0:
        return None
    return float(heat[dilate(mask, tolerance)].sum() / total)


def _read_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"Cannot read {path}: is --png-dir the preprocess stage's data/png?")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def pointing_game(
    models: str | Path,
    split: str | Path,
    png_dir: str | Path,
    params: str | Path,
    tolerance: int = 2,
    level: int | None = None,
    labels: Sequence[str] = LABELS,
    batch_size: int = 32,
    backbones: dict[str, tuple[str, ...]] | None = None,
) -> dict:
    """Play the pointing game on one split; returns per-label and overall figures (see the module docstring).

    ``backbones``: per label, backbone families to use instead of the recipe's (to compare choices).
    """
    started = time.perf_counter()
    model = load_models(models)
    table = pd.read_csv(split, dtype={"ID": str})
    ids = [validate_id(image_id) for image_id in table["ID"]]
    size = model.image_size
    images = np.stack([_read_png(Path(png_dir) / f"{image_id}.png") for image_id in ids])
    if images.shape[1:3] != (size, size):
        raise ValueError(f"The PNGs are {images.shape[1:3]}, the model reads {size} x {size}: wrong --png-dir?")
    series = table["SeriesInstanceUID"].astype(str).tolist()
    inputs = model.model_inputs(images, series, table["position_z"].astype(float).tolist(), ids)
    # Grad-CAM explains the CNN, so the true positives are the CNN's, at the card's thresholds tuned for it.
    probabilities = model.predict(image_batches(inputs, batch_size))
    thresholds = model.card.cnn_thresholds or model.card.thresholds  # with a sequence model, "thresholds" are its own
    level = auto_level(size) if level is None else level
    config = section(load_params(params), "synthesize", SynthesizeParams)

    chosen = {
        label: np.flatnonzero((table[label].to_numpy() == 1) & (probabilities[:, LABELS.index(label)] >= thresholds[label]))
        for label in labels
    }
    wanted = sorted({ids[row] for rows in chosen.values() for row in rows})
    masks = lesion_masks(config, wanted)
    missing = sorted(set(wanted) - set(masks))
    if missing:
        raise ValueError(
            f"{len(missing)} test images (e.g. {missing[0]}) are not in the synthetic set of {params}: wrong --params?"
        )

    results: dict[str, dict] = {}
    for label in labels:
        rows = chosen[label]
        target = model.recipe.cam_target(label)
        families = (backbones or {}).get(label, target.backbones)
        heatmaps = gradcam_network(model.networks[target.network], inputs[rows], target.output, families, batch_size, level)
        hits, chances, energies, no_mask = 0, [], [], 0
        for row, heatmap in zip(rows, heatmaps):
            lesion = mask_to_image(masks[ids[row]].label(label), size)
            if not lesion.any():  # a label with no lesion pixel at this size: cannot be scored
                no_mask += 1
                continue
            brain = mask_to_image(masks[ids[row]].brain, size, min_coverage=0.5)
            hits += is_hit(heatmap, lesion, tolerance)
            chances.append(chance_of_hit(lesion, brain, tolerance))
            energy = energy_inside(heatmap, lesion, brain, tolerance)
            energies.append(0.0 if energy is None else energy)  # no evidence inside the skull: nothing on the lesion
        scored = len(chances)
        results[label] = {
            "true_positives": int(len(rows)),
            "scored": scored,
            "hits": int(hits),
            "score": hits / scored if scored else None,
            "baseline": float(np.mean(chances)) if scored else None,
            "energy": float(np.mean(energies)) if scored else None,
            "unscorable": no_mask,
            "network": target.network,
            "backbones": list(families),
        }
    scored = sum(entry["scored"] for entry in results.values())
    hits = sum(entry["hits"] for entry in results.values())
    baseline = sum(entry["baseline"] * entry["scored"] for entry in results.values() if entry["scored"])
    energy = sum(entry["energy"] * entry["scored"] for entry in results.values() if entry["scored"])
    return {
        "labels": results,
        "overall": {
            "scored": scored,
            "hits": hits,
            "score": hits / scored if scored else None,
            "baseline": baseline / scored if scored else None,
            "energy": energy / scored if scored else None,
        },
        "tolerance_px": tolerance,
        "level": level,
        "image_size": size,
        "test_images": len(ids),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _report(result: dict) -> str:
    lines = [
        f"Pointing game: {result['test_images']} images at {result['image_size']} px, tolerance {result['tolerance_px']} px, "
        f"Grad-CAM level {result['level']} ({result['seconds']} s)",
        f"{'label':<18}{'hits/scored':>12}{'score':>8}{'energy':>8}{'chance':>8}  network (backbones)",
    ]

    def row(name, entry, where=""):
        score, energy, chance = ("-" if entry[key] is None else f"{entry[key]:.3f}" for key in ("score", "energy", "baseline"))
        return f"{name:<18}{entry['hits']:>5}/{entry['scored']:<6}{score:>8}{energy:>8}{chance:>8}  {where}"

    for label, entry in result["labels"].items():
        lines.append(row(label, entry, f"{entry['network']} ({' + '.join(entry['backbones'])})"))
    lines.append(row("overall", result["overall"]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="models", help="model folder (models/ or models/cnn)")
    parser.add_argument("--split", default="data/split/test.csv", help="split CSV (ID, labels, SeriesInstanceUID, position_z)")
    parser.add_argument("--png-dir", default="data/png", help="the preprocessed PNGs")
    parser.add_argument("--params", default="params.yaml", help="params file whose `synthesize` section made the data")
    parser.add_argument(
        "--tolerance", type=int, default=2, help="pixels (at the model's image size) around the lesion that count"
    )
    parser.add_argument(
        "--level",
        type=int,
        default=None,
        help="0: the backbones' last feature map; k: the last one of 2**k times its side; default: what ich predict uses (ich.inference.explain.auto_level)",
    )
    parser.add_argument("--labels", nargs="+", default=list(LABELS), choices=LABELS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = pointing_game(
        args.models, args.split, args.png_dir, args.params, args.tolerance, args.level, args.labels, args.batch_size
    )
    print(_report(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
