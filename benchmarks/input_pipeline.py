"""Benchmark: the tf.data input pipeline's images/s beside the models' training images/s.

The input must be much faster than training, or the accelerator waits. Uses the PNGs of the last
`dvc repro` (data/png) when present, else synthetic PNGs. Prints medians of the timed epochs.

    python -m benchmarks.input_pipeline --images 512 --batch-size 32
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def _paths(count: int, size: int, work: Path) -> list[str]:
    existing = sorted(Path("data/png").glob("ID_*.png"))[:count]
    if len(existing) >= count:
        return [str(path) for path in existing]
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = work / f"ID_{index:x}.png"
        cv2.imwrite(str(path), (rng.random((size, size, 3)) * 255).astype(np.uint8))
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import keras

    from ich.models.networks import build_any_classifier, build_subtype_fusion
    from ich.training.datasets import make_dataset

    with tempfile.TemporaryDirectory() as work:
        paths = _paths(args.images, args.image_size, Path(work))
        labels = np.zeros((len(paths), 5), dtype=np.float32)
        size = args.image_size
        rows = []
        for cache in (False, True):
            dataset = make_dataset(paths, labels, size, args.batch_size, shuffle=True, seed=0, cache=cache)
            times = []
            for _ in range(args.repeats + 1):  # the first pass fills the cache / warms up
                start = time.perf_counter()
                for _batch in dataset:
                    pass
                times.append(time.perf_counter() - start)
            rows.append(
                (f"input pipeline ({'cached' if cache else 'decode every epoch'})", len(paths) / statistics.median(times[1:]))
            )
        shape = (size, size, 3)
        models = {
            "train stage 1 (EfficientNetV2-B0)": build_any_classifier("efficientnetv2b0", shape, None, 0.2),
            "train stage 2 (EffNetV2-B0 + ConvNeXt-Atto fusion)": build_subtype_fusion(
                "efficientnetv2b0", "convnext_atto", shape, 5, None, 0.2, 128
            ),
        }
        for name, model in models.items():
            outputs = model.output_shape[-1]
            dataset = make_dataset(paths, np.zeros((len(paths), outputs), np.float32), size, args.batch_size, True, 0)
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
            model.fit(dataset, epochs=1, verbose=0)  # compile and fill the cache
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model.fit(dataset, epochs=1, verbose=0)
                times.append(time.perf_counter() - start)
            rows.append((name, len(paths) / statistics.median(times)))
    print(f"{len(paths)} images of {size} px, batch {args.batch_size}, median of {args.repeats} epochs")
    for name, rate in rows:
        print(f"{name:55s} {rate:9.1f} images/s")
    print(f"input (decode every epoch) / fastest training: {rows[0][1] / max(rate for _, rate in rows[2:]):.1f}x")


if __name__ == "__main__":
    main()
