"""Benchmark: ``ich.data.labels_csv.parse_long_csv`` on an RSNA-size long CSV vs pandas ``read_csv`` alone.

Writes a seeded CSV in the ``stage_2_train.csv`` layout (``--images`` images x 6 rows, RSNA: 752,803,
so 4.5 M rows) with a few hundred planted problems (exact and conflicting duplicates, bad IDs, bad
values, unknown labels, images with a missing row, ``any`` disagreeing with the subtypes, padded
fields). Then, ``--repeats`` times, each in a fresh subprocess: pandas' C reader alone on the file (the
floor any parser of it pays) and ``parse_long_csv``. Each subprocess reports its own wall time (imports
excluded) and peak RSS (``getrusage(RUSAGE_SELF)``; the parent's ``RUSAGE_CHILDREN`` would be the
maximum over all children so far). Prints the median of each and its ratio to the baseline:

    python -m benchmarks.labels_csv --images 752803 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ich.core.labels import RSNA_ROW_ORDER

# Per-image prevalence of the subtypes, roughly RSNA's (stage 1).
_PREVALENCE = {
    "epidural": 0.0041,
    "intraparenchymal": 0.048,
    "intraventricular": 0.035,
    "subarachnoid": 0.048,
    "subdural": 0.063,
}

_MEASURE = r"""
import json, resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if kind == "read_csv":
    import pandas as pd
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    summary = {"rows": len(frame)}
else:
    from ich.data.labels_csv import parse_long_csv
    parsed = parse_long_csv(path)
    summary = {**parsed.counts, "rejected": len(parsed.rejected)}
seconds = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024, "summary": summary}))
"""


def write_labels_csv(path: Path, images: int, seed: int, problems: int = 30) -> dict[str, int]:
    """Write an RSNA-layout long CSV for ``images`` images with ``problems`` planted cases of each kind.

    Returns how many of each kind were planted (the rows they touch may overlap a little by chance).
    """
    rng = np.random.default_rng(seed)
    codes = rng.choice(16**9, size=images, replace=False)
    ids = [f"ID_{code:09x}" for code in codes]
    values = np.zeros((images, len(RSNA_ROW_ORDER)), dtype=np.int8)
    for column, label in enumerate(RSNA_ROW_ORDER[:-1]):
        values[:, column] = rng.random(images) < _PREVALENCE[label]
    values[:, -1] = values[:, :-1].max(axis=1)
    lines = [
        f"{image_id}_{label},{value}" for image_id, row in zip(ids, values.tolist()) for label, value in zip(RSNA_ROW_ORDER, row)
    ]
    planted = {
        "exact_duplicates": 0,
        "conflicting": 0,
        "bad_ids": 0,
        "bad_values": 0,
        "unknown_labels": 0,
        "incomplete": 0,
        "inconsistent_any": 0,
        "padded": 0,
    }
    picks = iter(rng.permutation(len(lines)))
    for _ in range(problems):
        # in place: one row removed (incomplete), 'any' flipped, one field padded with spaces
        row = next(picks)
        lines[row] = ""  # an empty line is skipped by the reader: the image misses a row
        planted["incomplete"] += 1
        row = next(picks)
        image = row // len(RSNA_ROW_ORDER)
        any_row = image * len(RSNA_ROW_ORDER) + len(RSNA_ROW_ORDER) - 1
        if lines[any_row]:
            lines[any_row] = f"{ids[image]}_any,{1 - values[image, -1]}"
            planted["inconsistent_any"] += 1
        row = next(picks)
        if lines[row]:
            raw_id, value = lines[row].split(",")
            lines[row] = f"  {raw_id} , {value} "
            planted["padded"] += 1
    extra = []
    for _ in range(problems):
        row = next(picks)
        if lines[row]:
            extra.append(lines[row])
            planted["exact_duplicates"] += 1
        row = next(picks)
        if lines[row]:
            raw_id, value = lines[row].split(",")
            extra.append(f"{raw_id},{1 - int(value.strip())}")
            planted["conflicting"] += 1
        hex_part = f"{int(rng.integers(16**9)):09x}"
        extra += [
            f"ID_{hex_part.upper()}Z_any,0",
            f"ID_../{hex_part}_subdural,0",
        ]
        planted["bad_ids"] += 2
        extra += [f"ID_{hex_part}_any,2", f"ID_{hex_part}_epidural,yes"]
        planted["bad_values"] += 2
        extra.append(f"ID_{hex_part}_headache,0")
        planted["unknown_labels"] += 1
    for line in extra:
        lines.insert(int(rng.integers(len(lines))), line)
    with open(path, "w", encoding="utf-8", newline="\n") as stream:
        stream.write("ID,Label\n")
        stream.write("\n".join(lines))
        stream.write("\n")
    return planted


def _measure(kind: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", _MEASURE, kind, str(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"measuring {kind} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=752_803, help="images in the CSV (RSNA: 752,803)")
    parser.add_argument("--problems", type=int, default=30, help="planted cases of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ich-bench-labels-") as work:
        path = Path(work) / "stage_2_train.csv"
        planted = write_labels_csv(path, args.images, args.seed, args.problems)
        size_mib = path.stat().st_size / 2**20
        print(f"CSV: {args.images:,} images, {size_mib:.0f} MiB; planted: {planted}")
        runs: dict[str, list[dict]] = {"read_csv": [], "parse_long_csv": []}
        for _ in range(args.repeats):
            for kind in runs:
                runs[kind].append(_measure(kind, path))
        print(f"parse_long_csv counts: {runs['parse_long_csv'][-1]['summary']}")
        print(f"median of {args.repeats}, each run in a fresh process:")
        medians = {
            kind: (statistics.median(r["seconds"] for r in results), statistics.median(r["peak_mib"] for r in results))
            for kind, results in runs.items()
        }
        base_seconds, base_mib = medians["read_csv"]
        for kind, (seconds, mib) in medians.items():
            print(
                f"  {kind:15s} {seconds:6.2f} s ({seconds / base_seconds:4.2f}x read_csv)   "
                f"peak RSS {mib:6.0f} MiB ({mib / base_mib:4.2f}x read_csv)"
            )


if __name__ == "__main__":
    main()
