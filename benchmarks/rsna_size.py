"""Benchmark: the seed's configuration at RSNA size, both layouts, in one run.

Writes an RSNA-size set of small DICOMs (:mod:`benchmarks.rsna_data`: 752,803 slices of 64 px in 21,745 series of
18,939 patients, RSNA's prevalence; ~6.7 GB), then, in a temporary copy of this repository per layout with
params-rsna.yaml (the seed's sampling: ~10,000 positive slices per subtype, val and test whole at natural
prevalence, 256 px), measures:

- each data stage by ``dvc repro -s``: wall seconds, the stage command's own seconds (its process's lifetime) and so
  DVC's share (hashing, caching, checkout), and the peak RSS of the whole process tree (sampled every 0.1 s);
- a no-op ``dvc status`` (median of 3);
- ``dvc push`` of every output to a local folder remote, and ``dvc pull`` of them into an emptied workspace and
  cache, against ``cp -a`` of the same output folders;
- the training input pipeline (decode, batch; no model) over one epoch of the training set (with its augmented
  copies, shuffled) and of the validation set at 256 px, in a separate process: images/s, images/s per core and
  peak RSS, with ``train.cache_images: auto`` and the default budget;
- that both layouts hold the same pixels (every processed image's PNG bytes compared).

Layouts: ``files`` (``copy.mode: link``, ``preprocess.layout: files``, the layout of the demo and of this project
before shards) is the baseline; ``shards`` (``copy.mode: manifest``, ``preprocess.layout: shards``, what
params-rsna.yaml sets). Needs ~45 GB of free disk in ``--work`` and ~25 minutes on 2 cores:

    python -m benchmarks.rsna_size --work /tmp/rsna-bench
    python -m benchmarks.rsna_size --work /tmp/rsna-bench --images 20000   # a quick, scaled-down run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

from harness.project import ROOT, copy_repository, stage_env

DATA_STAGES = ("index", "split", "sample", "copy", "preprocess", "augment")
OUTPUTS = ("data/dicom", "data/png", "data/augmented", "data/split")
LAYOUTS = {
    "files": {"copy": {"mode": "link"}, "preprocess": {"layout": "files"}},
    "shards": {"copy": {"mode": "manifest"}, "preprocess": {"layout": "shards"}},
}


class TreeSampler:
    """Samples a process and its descendants every ``interval`` s: the peak of their summed RSS, and the lifetime
    (first and last time seen) of each descendant whose command line contains ``track``."""

    def __init__(self, process: subprocess.Popen, track: str, interval: float = 0.1) -> None:
        self.root, self.track, self.interval = psutil.Process(process.pid), track, interval
        self.peak_rss, self.seen = 0, {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total, now = 0, time.perf_counter()
            for process in tree:
                try:
                    total += process.memory_info().rss
                    if self.track in " ".join(process.cmdline()):
                        first, _ = self.seen.get(process.pid, (now, now))
                        self.seen[process.pid] = (first, now)
                except psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, total)
            time.sleep(self.interval)

    def tracked_seconds(self) -> float:
        """Lifetime of the longest-lived tracked process (the stage command; its workers live inside it)."""
        return max((last - first for first, last in self.seen.values()), default=0.0)


def timed(args: list[str], cwd: Path, track: str = "\0") -> dict:
    """Run ``args`` in ``cwd``: wall seconds, peak RSS of the process tree, seconds of the ``track`` process."""
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=cwd, env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(process, track)
    output, _ = process.communicate()
    wall = time.perf_counter() - start
    sampler.thread.join(timeout=1)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{output[-3000:]}")
    return {"seconds": wall, "peak_rss_gb": sampler.peak_rss / 2**30, "own_seconds": sampler.tracked_seconds()}


def dvc(*args: str, cwd: Path, track: str = "\0") -> dict:
    return timed([sys.executable, "-m", "dvc", *args], cwd, track)


def file_count(folders: list[Path]) -> int:
    return sum(len(files) for folder in folders for _, _, files in os.walk(folder))


def project_for(work: Path, layout: str, dataset: Path) -> Path:
    project = work / layout
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    params = yaml.safe_load((ROOT / "params-rsna.yaml").read_text())
    params["data"] = {"labels_csv": str(dataset / "stage_2_train.csv"), "dicom_dir": str(dataset / "stage_2_train")}
    for section, values in LAYOUTS[layout].items():
        params[section].update(values)
    copy_repository(project)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    remote = work / f"remote-{layout}"
    shutil.rmtree(remote, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "add", "-f", "-d", "bench", str(remote)], cwd=project, check=True, env=stage_env()
    )
    return project


def data_stages(project: Path) -> dict:
    stages = {}
    for stage in DATA_STAGES:
        stages[stage] = dvc("repro", "-s", stage, cwd=project, track=f"stages.{stage}")
        print(f"  {stage:10s} {stages[stage]['seconds']:7.1f} s  peak {stages[stage]['peak_rss_gb']:.2f} GB", flush=True)
    return stages


def transfer(project: Path, work: Path, layout: str, pull: bool = True) -> dict:
    folders = [project / name for name in OUTPUTS]
    copy_target = work / f"cp-{layout}"
    shutil.rmtree(copy_target, ignore_errors=True)
    copy_target.mkdir()
    cp = timed(["cp", "-a", *map(str, folders), str(copy_target)], project)
    shutil.rmtree(copy_target)
    push = dvc("push", *DATA_STAGES, cwd=project)
    for folder in folders:
        shutil.rmtree(folder)
    shutil.rmtree(project / ".dvc/cache")
    pull = dvc("pull", *DATA_STAGES, cwd=project)
    return {
        "files": file_count(folders),
        "cp_seconds": cp["seconds"],
        "push_seconds": push["seconds"],
        "pull_seconds": pull["seconds"],
    }


def input_pipeline(project: Path) -> dict:
    """One epoch of the training input and of the validation input, in a process of its own (its peak RSS)."""
    result = timed([sys.executable, "-m", "benchmarks.rsna_size", "--input-pipeline", str(project)], ROOT)
    report = json.loads((project / "input_pipeline.json").read_text())
    return {**report, "peak_rss_gb": result["peak_rss_gb"]}


def run_input_pipeline(project: Path) -> None:
    """(In the child process.) Both datasets as the train stage builds them, iterated once each."""
    os.chdir(project)
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from ich.core.images import LOCATION_COLUMNS, load_table
    from ich.core.labels import LABELS, label_matrix
    from ich.core.params import PreprocessParams, TrainParams, load_params, section
    from ich.training.datasets import make_dataset, plan_cache

    params = load_params()
    train_params, preprocess = section(params, "train", TrainParams), section(params, "preprocess", PreprocessParams)
    train = pd.concat(
        [load_table("data/split/train.csv", "data/png"), load_table("data/augmented.csv", "data/augmented", augmented=True)],
        ignore_index=True,
    )
    val = load_table("data/split/val.csv", "data/png")
    cache = plan_cache([len(train), len(val)], preprocess.image_size, train_params.cache_images, train_params.cache_budget_gb)
    report: dict = {"budget_gb": train_params.cache_budget_gb, "image_size": preprocess.image_size}
    for name, frame, shuffle, cached in (("train", train, True, cache[0]), ("val", val, False, cache[1])):
        dataset = make_dataset(
            frame[list(LOCATION_COLUMNS)], label_matrix(frame, LABELS), preprocess.image_size, 32, shuffle, 0, cached
        )
        start, images = time.perf_counter(), 0
        for batch, _ in dataset:
            images += int(batch.shape[0])
        seconds = time.perf_counter() - start
        report[name] = {"images": images, "cached": cached, "seconds": seconds, "images_per_s": images / seconds}
    (project / "input_pipeline.json").write_text(json.dumps(report))


def same_pixels(files: Path, shards: Path) -> dict:
    """Every processed and augmented image: the PNG bytes of the files layout against the shards layout."""
    sys.path.insert(0, str(ROOT))
    from ich.core.images import ImageStore, OpenFiles

    compared = 0
    for folder in ("data/png", "data/augmented"):
        store = ImageStore.open(shards / folder)
        locations = store.locate(list(store.index.index)) if store.index is not None else None
        if locations is None:
            raise SystemExit(f"{shards / folder} is not in the shards layout")
        with OpenFiles() as opened:
            for image_id, (path, offset, size) in zip(store.index.index, locations.itertuples(index=False)):
                if opened.read(path, int(offset), int(size)) != (files / folder / f"{image_id}.png").read_bytes():
                    raise SystemExit(f"{image_id}: different bytes in the two layouts")
                compared += 1
        if compared and len(list((files / folder).glob("*.png"))) != len(store.index):
            raise SystemExit(f"{folder}: the layouts hold different numbers of images")
    return {"images_compared": compared}


def print_report(results: dict) -> None:
    layouts = [name for name in LAYOUTS if name in results]
    print("\n## RSNA size, 2 cores: seconds / peak RSS of the process tree (GB)")
    print("| stage | " + " | ".join(layouts) + (" | ratio |" if len(layouts) == 2 else " |"))
    print("|---|" + "---|" * (len(layouts) + (len(layouts) == 2)))
    for stage in DATA_STAGES:
        cells = [
            f"{results[name]['stages'][stage]['seconds']:.0f} s / {results[name]['stages'][stage]['peak_rss_gb']:.2f}"
            for name in layouts
        ]
        ratio = ""
        if len(layouts) == 2:
            a, b = (results[name]["stages"][stage]["seconds"] for name in layouts)
            ratio = f" {a / b:.1f}x |"
        print(f"| {stage} | " + " | ".join(cells) + " |" + ratio)
    for name in layouts:
        stages = results[name]["stages"]
        total = sum(stage["seconds"] for stage in stages.values())
        without_augment = total - stages["augment"]["seconds"]
        pre = stages["preprocess"]
        dvc_share = 1 - pre["own_seconds"] / pre["seconds"] if pre["seconds"] else 0
        print(
            f"\n{name}: data stages {total:.0f} s ({without_augment:.0f} s index..preprocess); DVC's share of preprocess "
            f"{100 * dvc_share:.0f} % (stage command {pre['own_seconds']:.0f} s of {pre['seconds']:.0f} s)"
        )
        print(
            f"{name}: no-op dvc status {results[name]['status_median_s']:.1f} s (median of 3); {results[name]['files_tracked']} files in the outputs"
        )
        moved = results[name].get("transfer")
        if moved:
            pulled = (
                f", dvc pull {moved['pull_seconds']:.0f} s ({moved['pull_seconds'] / moved['cp_seconds']:.1f}x)"
                if moved["pull_seconds"] is not None
                else ""
            )
            print(
                f"{name}: cp -a {moved['cp_seconds']:.0f} s, dvc push {moved['push_seconds']:.0f} s "
                f"({moved['push_seconds'] / moved['cp_seconds']:.1f}x cp -a){pulled}, for {moved['files']} files"
            )
        pipe = results[name].get("input")
        if pipe:
            for split in ("train", "val"):
                part = pipe[split]
                print(
                    f"{name}: input pipeline {split} {part['images']} images at {pipe['image_size']} px "
                    f"({'cached' if part['cached'] else 'streamed'}): {part['images_per_s']:.0f} images/s "
                    f"({part['images_per_s'] / (os.cpu_count() or 1):.0f} per core)"
                )
            print(f"{name}: input pipeline peak RSS {pipe['peak_rss_gb']:.2f} GB (budget {pipe['budget_gb']} GB)")
    if "pixels" in results:
        print(f"\nsame pixels: {results['pixels']['images_compared']} images, identical PNG bytes in both layouts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/rsna-bench"))
    parser.add_argument("--images", type=int, default=752_803)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--no-transfer", action="store_true", help="skip dvc push/pull and cp -a")
    parser.add_argument("--no-input", action="store_true", help="skip the input pipeline")
    parser.add_argument(
        "--light-baseline", action="store_true", help="for the files layout, one dvc status, no pull, no input pipeline"
    )
    parser.add_argument("--input-pipeline", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.input_pipeline:
        run_input_pipeline(args.input_pipeline)
        return
    from benchmarks.rsna_data import write_rsna_size_set

    args.work.mkdir(parents=True, exist_ok=True)
    dataset = args.work / f"dataset-{args.images}"
    marker = dataset / "written.json"
    if not marker.is_file():
        shutil.rmtree(dataset, ignore_errors=True)
        written = write_rsna_size_set(
            dataset,
            images=args.images,
            series=round(args.images * 21_745 / 752_803),
            patients=round(args.images * 18_939 / 752_803),
        )
        marker.write_text(json.dumps(written, default=str))
    print(f"dataset: {json.loads(marker.read_text())}", flush=True)
    results: dict = {"machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"}
    for layout in args.layouts:
        print(f"\n{layout}:", flush=True)
        project = project_for(args.work, layout, dataset)
        results[layout] = {"stages": data_stages(project)}
        results[layout]["files_tracked"] = file_count([project / name for name in OUTPUTS])
        light = args.light_baseline and layout == "files"
        repeats = 1 if light else 3
        results[layout]["status_median_s"] = statistics.median(dvc("status", cwd=project)["seconds"] for _ in range(repeats))
        print(f"  no-op dvc status {results[layout]['status_median_s']:.1f} s", flush=True)
        if not args.no_input and not light:
            results[layout]["input"] = input_pipeline(project)
        if not args.no_transfer:
            results[layout]["transfer"] = transfer(project, args.work, layout, pull=not light)
            print(f"  transfer {results[layout]['transfer']}", flush=True)
    if set(LAYOUTS) <= set(args.layouts):
        results["pixels"] = same_pixels(args.work / "files", args.work / "shards")
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    print_report(results)


if __name__ == "__main__":
    main()
