"""Benchmark: `ich predict`'s end-to-end rate (DICOM files -> probabilities) beside the model's own rate on
preloaded arrays, in the same process.

Reading and rendering DICOMs runs in worker processes a chunk ahead of the model (ich.inference.render), so the end-to-end
rate should stay close to the model's own: the goal is at least 70 %. Three figures, medians of ``--repeats``
timed runs after one untimed warm-up each:

- end to end: header scan + decoding + rendering + the model, on whole series of about ``--images`` files;
- model only: :meth:`LoadedModel.predict_slices` on the same images already in memory, in the same chunks;
- rendering only: the worker pool alone (what the model has to hide).

    python -m benchmarks.predict_throughput --models models --dicom-dir data/synthetic/stage_2_train --images 400
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models")
    parser.add_argument("--dicom-dir", default="data/synthetic/stage_2_train")
    parser.add_argument("--images", type=int, default=400, help="about this many files, whole series")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="rendering processes; 0 = all cores")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()

    from ich.imaging.windows import windows_from_params
    from ich.inference.cli import load_model_folder
    from ich.inference.predict import plan_chunks, predict_files
    from ich.inference.render import render_chunks
    from ich.inference.scan import scan_folder

    full = scan_folder(args.dicom_dir, workers=args.workers)
    chosen, series_seen = [], set()
    for item in full.files:  # whole series, in scan order, until about --images files
        if item.series_uid not in series_seen and len(chosen) >= args.images:
            break
        series_seen.add(item.series_uid)
        chosen.append(item)
    model = load_model_folder(args.models)
    windows = windows_from_params(model.card.windows)
    chunks = plan_chunks([item.series_uid for item in chosen], args.chunk_images)

    with tempfile.TemporaryDirectory(prefix="predict-benchmark-") as work:
        folder = Path(work)
        for index, item in enumerate(chosen):  # the chosen files alone, so the timed scan reads just them
            os.symlink(os.path.abspath(item.path), folder / f"{index:06d}_{Path(item.path).name}")

        def end_to_end() -> int:
            scan = scan_folder(folder, workers=args.workers)
            prediction = predict_files(
                model, scan, tta=args.tta, batch_size=args.batch_size, workers=args.workers, chunk_images=args.chunk_images
            )
            return len(prediction.slices)

        def render_only() -> list:
            return list(render_chunks(chosen, chunks, image_size=model.image_size, windows=windows, workers=args.workers))

        rendered = render_only()

        def model_only() -> int:
            count = 0
            for chunk in rendered:
                files = [chosen[row] for row in chunk.rendered]
                model.predict_slices(
                    chunk.images,
                    [item.series_uid for item in files],
                    [item.position_z for item in files],
                    [item.image_id for item in files],
                    batch_size=args.batch_size,
                    tta=args.tta,
                )
                count += len(files)
            return count

        rates = {}
        for name, run in (
            ("model only (preloaded arrays)", model_only),
            ("rendering only (worker pool)", render_only),
            ("end to end (DICOM -> probabilities)", end_to_end),
        ):
            run()  # warm-up: traces the model, fills the page cache
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            rates[name] = len(chosen) / statistics.median(times)

    print(
        f"{len(chosen)} images in {len(series_seen)} series, {model.image_size} px, arch {model.card.arch}"
        f"{' + sequence model' if model.sequence is not None else ''}, batch {args.batch_size}, chunks of ~{args.chunk_images}, "
        f"workers {args.workers or os.cpu_count()}, tta {args.tta}; {platform.machine()} with {os.cpu_count()} cores; "
        f"medians of {args.repeats} runs"
    )
    for name, rate in rates.items():
        print(f"  {name:<38} {rate:8.1f} images/s")
    ratio = rates["end to end (DICOM -> probabilities)"] / rates["model only (preloaded arrays)"]
    print(f"  end to end / model only: {ratio:.0%} (goal >= 70 %)")


if __name__ == "__main__":
    main()
