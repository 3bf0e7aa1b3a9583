"""Resumable training: per-epoch snapshots in a DVC ``persist`` out, so a killed run restarts where it stopped.

DVC 3 has no checkpoints, and it deletes a stage's ordinary outputs before running it again. The train stage
keeps its resume state in ``checkpoints/train`` (declared ``persist: true``): after every finished epoch
the model's weights, the optimizer's variables (moments, step count, so the learning-rate schedule goes on)
and the callbacks' state (best validation AUC so far, early-stopping counter, dvclive step) are written
atomically. ``state.json`` names the snapshot; a snapshot is written before the state that points to it, so
a kill at any instant leaves a consistent pair.

A snapshot is only used when its *fingerprint* matches the current run: :func:`stage_fingerprint` hashes
the values of the stage's params and the content of every one of its DVC ``deps`` (the images, the
tables, the code), so a run over other data, params or code starts from scratch. After a run finishes, the snapshots are deleted and
``state.json`` records the completed fingerprint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import yaml

from dvclive import Live
from ich.core.files import atomic_open, atomic_write_text

__all__ = ["stage_fingerprint", "resumed_live", "ResumeStore", "ResumeCallback", "ResumableEarlyStopping", "trim_live_history"]

logger = logging.getLogger("ich")

STATE_FILE = "state.json"


_INTERPOLATION = re.compile(r"\$\{\s*([\w.]+)\s*\}")


def _param(params: Mapping[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"params.yaml has no `{dotted}`")
        value = value[part]
    return value


def _hash_path(digest: Any, path: Path, root: Path) -> None:
    """Feed a file's bytes, or every file of a folder tree (sorted, with relative names), into ``digest``."""
    files = sorted(item for item in path.rglob("*") if item.is_file()) if path.is_dir() else [path]
    for item in files:
        digest.update(item.relative_to(root).as_posix().encode("utf-8") + b"\0")
        with item.open("rb") as stream:
            digest.update(hashlib.file_digest(stream, "sha256").digest())


def stage_fingerprint(stage: str, root: str | os.PathLike = ".", params_file: str = "params.yaml") -> str:
    """SHA-256 of what shaped a DVC stage's run: the values of its ``params`` and the content of each of its
    ``deps`` (files, and folders file by file), as ``dvc.yaml`` declares them.

    So new images with unchanged tables (say, after a windowing change) or a changed line of code give
    another fingerprint. ``${param}`` in a dep path is filled in from ``params_file``.

    Raises:
        KeyError: the stage, or a param it names, is not defined.
        FileNotFoundError: a dep does not exist (run the upstream stages first).
    """
    root = Path(root)
    definition = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"][stage]
    params = yaml.safe_load((root / params_file).read_text(encoding="utf-8")) or {}
    names: list[str] = []
    for entry in definition.get("params", []):
        names.extend([entry] if isinstance(entry, str) else [key for keys in entry.values() for key in keys])
    values = {name: _param(params, name) for name in names}
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode("utf-8"))
    for entry in definition.get("deps", []):
        dep = entry if isinstance(entry, str) else next(iter(entry))
        dep = _INTERPOLATION.sub(lambda match: str(_param(params, match.group(1))), dep)
        path = root / dep
        if not path.exists():
            raise FileNotFoundError(f"Stage {stage!r} depends on {dep!r}, which does not exist; run the stages before it.")
        digest.update(b"\1" + dep.encode("utf-8") + b"\0")
        _hash_path(digest, path, root)
    return digest.hexdigest()


class ResumeStore:
    """The resume state of one training run in ``directory``.

    Args:
        directory: the persist out (created if needed).
        run_fingerprint: see :func:`stage_fingerprint`; a stored state with another fingerprint is discarded.
        enabled: False writes nothing and never resumes (used by non-chief multi-worker processes).
    """

    def __init__(self, directory: str | os.PathLike, run_fingerprint: str, enabled: bool = True):
        self.directory = Path(directory)
        self.fingerprint = run_fingerprint
        self.enabled = enabled
        self.directory.mkdir(parents=True, exist_ok=True)
        stored = self._read() if enabled else None
        if stored and stored.get("fingerprint") == run_fingerprint and not stored.get("complete"):
            self.state: dict[str, Any] = stored
            self.resuming = bool(stored.get("networks"))
        else:
            if stored and stored.get("networks") and stored.get("fingerprint") != run_fingerprint:
                logger.info("resume: the stored training state belongs to other params or data; starting afresh")
            self._clear_snapshots()
            self.state = {"fingerprint": run_fingerprint, "complete": False, "networks": {}}
            self.resuming = False
        if self.resuming:
            logger.info("resume: continuing an interrupted run (%s)", self._describe())

    def _read(self) -> dict[str, Any] | None:
        path = self.directory / STATE_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("resume: ignoring an unreadable %s (%s)", path, error)
            return None

    def _describe(self) -> str:
        parts = []
        for name, network in self.state["networks"].items():
            done = "complete" if network.get("complete") else f"{network.get('epoch', 0)} epoch(s) done"
            parts.append(f"{name}: {done}")
        return ", ".join(parts)

    def _clear_snapshots(self) -> None:
        for path in self.directory.iterdir():
            if path.name != STATE_FILE and path.is_file():
                path.unlink()

    def _write_state(self) -> None:
        if self.enabled:
            atomic_write_text(self.directory / STATE_FILE, json.dumps(self.state, indent=2, sort_keys=True) + "\n")

    def network(self, name: str) -> dict[str, Any]:
        """The stored progress of one network (empty when it has not finished an epoch)."""
        return dict(self.state["networks"].get(name, {}))

    @property
    def live_step(self) -> int | None:
        """The dvclive step to continue from, or None for a fresh run."""
        return self.state.get("live_step") if self.resuming else None

    def best_checkpoint(self, name: str) -> Path:
        """Where the best epoch of network ``name`` is kept until the run finishes."""
        return self.directory / f"{name}.best.keras"

    def save_epoch(self, name: str, model: keras.Model, progress: Mapping[str, Any], live_step: int) -> None:
        """Snapshot weights + optimizer, then point ``state.json`` at it, then drop the older snapshot."""
        if not self.enabled:
            return
        epoch = int(progress["epoch"])
        snapshot = f"{name}.epoch{epoch:04d}.npz"
        arrays = {f"weight{index}": value for index, value in enumerate(model.get_weights())}
        optimizer = model.optimizer
        if optimizer is not None and optimizer.built:
            arrays.update({f"optimizer{index}": np.asarray(v.numpy()) for index, v in enumerate(optimizer.variables)})
        with atomic_open(self.directory / snapshot) as stream:
            np.savez(stream, **arrays)
        previous = self.state["networks"].get(name, {}).get("snapshot")
        self.state["networks"][name] = {**progress, "snapshot": snapshot, "complete": False}
        self.state["live_step"] = int(live_step)
        self._write_state()
        if previous and previous != snapshot:
            (self.directory / previous).unlink(missing_ok=True)

    def mark_complete(self, name: str, live_step: int) -> None:
        """Network ``name`` finished all its phases; its best checkpoint is final."""
        if not self.enabled:
            return
        network = self.state["networks"].get(name, {})
        if network.get("snapshot"):
            (self.directory / network["snapshot"]).unlink(missing_ok=True)
        self.state["networks"][name] = {"complete": True}
        self.state["live_step"] = int(live_step)
        self._write_state()

    def restore(self, name: str, model: keras.Model, optimizer: bool = True) -> None:
        """Load the stored weights (and, with ``optimizer``, the optimizer's variables) of ``name`` into a
        compiled ``model``."""
        network = self.network(name)
        with np.load(self.directory / network["snapshot"]) as arrays:
            weights = [arrays[f"weight{index}"] for index in range(len(model.get_weights()))]
            model.set_weights(weights)
            optimizer_keys = sorted((key for key in arrays.files if key.startswith("optimizer")), key=lambda k: int(k[9:]))
            if optimizer and optimizer_keys:
                if not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                variables = model.optimizer.variables
                if len(variables) != len(optimizer_keys):
                    raise ValueError(
                        f"The resume snapshot of {name} has {len(optimizer_keys)} optimizer variables, the model "
                        f"{len(variables)}; delete {self.directory} to start afresh."
                    )
                for variable, key in zip(variables, optimizer_keys):
                    variable.assign(arrays[key])

    def finish(self) -> None:
        """The run completed: delete the snapshots and record the completed fingerprint."""
        if not self.enabled:
            return
        for path in self.directory.iterdir():
            if path.name != STATE_FILE and path.is_file():
                path.unlink()
        self.state = {"fingerprint": self.fingerprint, "complete": True, "networks": {}}
        self._write_state()


def trim_live_history(live_dir: str | os.PathLike, step: int) -> None:
    """Drop dvclive's per-step rows at or after ``step`` (logged after the last snapshot of a killed run)."""
    for path in Path(live_dir, "plots", "metrics").rglob("*.tsv"):
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines:
            continue
        header, rows = lines[0], lines[1:]
        columns = header.split("\t")
        if "step" not in columns:
            continue
        position = columns.index("step")
        kept = [row for row in rows if int(row.split("\t")[position]) < step]
        if len(kept) != len(rows):
            atomic_write_text(path, "\n".join([header, *kept]) + "\n")


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose counter and best value survive a resume."""

    def __init__(self, *args, resume_wait: int = 0, resume_best: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._resume_wait, self._resume_best = resume_wait, resume_best

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume_best is not None:
            self.wait, self.best = self._resume_wait, self._resume_best


class ResumeCallback(keras.callbacks.Callback):
    """After each epoch (and after the other callbacks), snapshot the run into a :class:`ResumeStore`."""

    def __init__(self, store: ResumeStore, name: str, phase: int, phase_start: int, checkpoint, stopper, live):
        super().__init__()
        self.store, self.name, self.phase, self.phase_start = store, name, phase, phase_start
        self.checkpoint, self.stopper, self.live = checkpoint, stopper, live

    def on_epoch_end(self, epoch, logs=None):
        best = self.checkpoint.best
        progress = {
            "phase": self.phase,
            "phase_start": self.phase_start,
            "epoch": epoch + 1,
            "checkpoint_best": None if best is None or not np.isfinite(best) else float(best),
            "stopper_wait": int(self.stopper.wait),
            "stopper_best": None if self.stopper.best is None or not np.isfinite(self.stopper.best) else float(self.stopper.best),
            "stopped": bool(self.model.stop_training),
        }
        self.store.save_epoch(self.name, self.model, progress, self.live.step)


@contextlib.contextmanager
def resumed_live(directory: str | os.PathLike, store: ResumeStore) -> Iterator[Live]:
    """The stage's dvclive run: a fresh one, or, when ``store`` resumes a killed run, that run continued at its
    last snapshot's step (rows logged after the snapshot are dropped first)."""
    step = store.live_step
    if step is not None:
        trim_live_history(directory, step)
    with Live(str(directory), dvcyaml=False, save_dvc_exp=False, resume=step is not None) as live:
        if step is not None:
            live.step = step
        yield live
