"""The two runs `ich compare` sets side by side, read into their test predictions and the truth they are scored on.

A run is named as one of:

- a folder holding ``test.csv`` (``data/predictions``, or a copy of it), or that CSV itself: ``ID`` and one
  probability column per label. Its truth is the workspace's ``data/split/test.csv`` unless one is given.
- a git revision (commit, branch, tag) or a DVC experiment name of the repository: ``data/predictions/test.csv``
  and ``data/split/test.csv`` as committed there, read with ``dvc.api.read`` (from the DVC cache when they are
  DVC outputs; DVC resolves experiment names as revisions).

An existing folder wins over a revision of the same name. Both runs must score the same images with the same
truth (val and test are the same patients across runs as long as the split params are): anything else is an
error that says what differs.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ich.core.errors import PipelineError
from ich.core.labels import LABELS

__all__ = ["PREDICTIONS_FILE", "TRUTH_FILE", "Run", "PairedRuns", "find_repository", "load_run", "pair_runs"]

#: Where a revision keeps its test predictions and its test truth (paths in the repository).
PREDICTIONS_FILE = "data/predictions/test.csv"
TRUTH_FILE = "data/split/test.csv"
_EXAMPLES = 3


@dataclass(frozen=True)
class Run:
    """One side of a comparison: the name given, where its files came from (``commit`` for a revision, else None)
    and its tables: ``predictions`` (``ID`` + :data:`LABELS`) and ``truth`` (``ID`` + :data:`LABELS` + ``PatientID``)."""

    name: str
    predictions_source: str
    truth_source: str
    commit: str | None
    predictions: pd.DataFrame
    truth: pd.DataFrame

    def describe(self) -> dict[str, str | None]:
        """What the JSON and the page say about the run."""
        return {
            "name": self.name,
            "kind": "folder" if self.commit is None else "revision",
            "commit": self.commit,
            "predictions": self.predictions_source,
            "truth": self.truth_source,
        }


@dataclass(frozen=True)
class PairedRuns:
    """Both runs on the same images, in ``ids`` order: ``y_true`` ``(N, L)`` 0/1, ``prob_a``/``prob_b`` ``(N, L)``,
    ``groups`` ``(N,)`` the patient of each image."""

    ids: np.ndarray
    groups: np.ndarray
    y_true: np.ndarray
    prob_a: np.ndarray
    prob_b: np.ndarray


def find_repository(start: str | os.PathLike | None = None) -> Path | None:
    """The root of the DVC repository holding ``start`` (default: the working directory), or None outside one."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(None if start is None else str(start)))
    except NotDvcRepoError:
        return None


def _examples(ids: set) -> str:
    return ", ".join(sorted(map(str, ids))[:_EXAMPLES])


def _table(source: str, where: str, truth: bool) -> pd.DataFrame:
    """Read one CSV (a path, or its text when ``where`` names a revision) and check its columns and values."""
    name = f"{TRUTH_FILE if truth else PREDICTIONS_FILE} at {where}" if where else source
    try:
        frame = pd.read_csv(io.StringIO(source) if where else source, dtype={"ID": str, "PatientID": str})
    except (OSError, ValueError) as error:
        raise PipelineError(f"Could not read {name} as a CSV: {error}") from error
    required = ["ID", *LABELS, *(["PatientID"] if truth else [])]
    missing = [column for column in required if column not in frame.columns]
    if missing:
        what = "the test truth (ID, the six labels 0/1, PatientID)" if truth else "test predictions (ID, six probabilities)"
        raise PipelineError(f"{name} lacks the columns {', '.join(missing)}; expected {what}: {', '.join(required)}.")
    frame = frame[required]
    duplicated = frame["ID"][frame["ID"].duplicated()]
    if not duplicated.empty:
        raise PipelineError(f"{name} lists {len(duplicated)} image IDs more than once, e.g. {_examples(set(duplicated))}.")
    values = frame[list(LABELS)].to_numpy(dtype=np.float64)
    if truth and not np.isin(values, (0, 1)).all():
        raise PipelineError(f"{name}: the label columns must hold only 0 and 1.")
    if not truth and not (np.isfinite(values).all() and values.min(initial=0) >= 0 and values.max(initial=0) <= 1):
        raise PipelineError(f"{name}: every probability must be a number in [0, 1] (found NaN or values outside).")
    return frame


def _read_revision(repository: Path, rev: str) -> tuple[str, str, str]:
    """The commit ``rev`` names and the text of both files there."""
    import dvc.api
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.scm import SCMError, resolve_rev

    try:
        with Repo(str(repository)) as repo:
            commit = resolve_rev(repo.scm, rev)
    except SCMError as error:
        raise PipelineError(
            f"{rev!r} is neither a folder nor a git revision or DVC experiment of {repository} ({error}). Pass a "
            "predictions folder holding test.csv, a commit, branch or tag (git log --oneline), or an experiment "
            "name (dvc exp list)."
        ) from error
    texts = []
    for path in (PREDICTIONS_FILE, TRUTH_FILE):
        try:
            texts.append(dvc.api.read(path, repo=str(repository), rev=commit))
        except DvcException as error:
            raise PipelineError(
                f"Could not read {path} at {rev!r} (commit {commit[:7]}): {str(error).rstrip('.')}. Either that "
                f"revision has no evaluate run committed, or its DVC-tracked data is not in the local cache: fetch it "
                f"(`dvc fetch --all-commits`; an experiment: `dvc exp pull <remote> {rev}`) or reproduce it there "
                f"(`git checkout {rev}` or `dvc exp apply {rev}`, then `dvc repro evaluate`)."
            ) from error
    return commit, texts[0], texts[1]


def load_run(spec: str, repository: str | os.PathLike | None = None, truth: str | os.PathLike | None = None) -> Run:
    """Read the run named ``spec``: a folder holding ``test.csv`` (or the CSV itself), else a revision of ``repository``.

    Args:
        spec: a predictions folder or CSV, a git revision or a DVC experiment name.
        repository: the DVC repository root; revisions are looked up there, and a folder's truth defaults to its
            workspace's ``data/split/test.csv``. None: no repository (folders then need ``truth``).
        truth: the test truth of a folder run (ignored for revisions, which carry their own).

    Raises:
        PipelineError: an unknown revision, a missing file, or a table without the expected columns or values.
    """
    path = Path(spec)
    if path.is_dir() or (path.is_file() and path.suffix == ".csv"):
        predictions_file = path / "test.csv" if path.is_dir() else path
        if not predictions_file.is_file():
            raise PipelineError(
                f"The folder {spec!r} holds no test.csv. Pass a predictions folder such as data/predictions (ID and "
                "one probability per label), its test.csv, or a git revision or DVC experiment name."
            )
        if truth is None:
            if repository is None or not (Path(repository) / TRUTH_FILE).is_file():
                raise PipelineError(
                    f"No truth for the predictions folder {spec!r}: there is no {TRUTH_FILE} in "
                    f"{repository or 'a DVC repository here'}. Pass --truth PATH (ID, the six labels, PatientID)."
                )
            truth = Path(repository) / TRUTH_FILE
        if not Path(truth).is_file():
            raise PipelineError(
                f"The truth file {str(truth)!r} does not exist. Pass the test split: ID, the six labels, PatientID."
            )
        return Run(
            spec, str(predictions_file), str(truth), None, _table(str(predictions_file), "", False), _table(str(truth), "", True)
        )
    if repository is None:
        raise PipelineError(
            f"{spec!r} is not a folder, and there is no DVC repository here to look it up as a revision or experiment. "
            "Run from the project's folder (or pass --repo), or pass a predictions folder holding test.csv."
        )
    commit, predictions_text, truth_text = _read_revision(Path(repository), spec)
    where = f"{spec!r} (commit {commit[:7]})"
    return Run(
        spec,
        f"{PREDICTIONS_FILE}@{commit}",
        f"{TRUTH_FILE}@{commit}",
        commit,
        _table(predictions_text, where, False),
        _table(truth_text, where, True),
    )


def _same_images(first: set, second: set, first_name: str, second_name: str) -> str:
    """Empty when the sets are equal, else how they differ."""
    if first == second:
        return ""
    only_first, only_second = first - second, second - first
    parts = [f"{len(first)} vs {len(second)} images, {len(first & second)} in common"]
    if only_first:
        parts.append(f"{len(only_first)} only in {first_name} (e.g. {_examples(only_first)})")
    if only_second:
        parts.append(f"{len(only_second)} only in {second_name} (e.g. {_examples(only_second)})")
    return "; ".join(parts)


def pair_runs(a: Run, b: Run) -> PairedRuns:
    """Both runs' predictions on the same images, after checking they are the same images with the same truth.

    Raises:
        PipelineError: a run's predictions and truth differ in images, the runs differ in images, or their truths
            disagree on an image's labels or patient.
    """
    for side, run in (("A", a), ("B", b)):
        difference = _same_images(set(run.predictions["ID"]), set(run.truth["ID"]), "the predictions", "the truth")
        if difference:
            raise PipelineError(
                f"Run {side} ({run.name}): {run.predictions_source} and {run.truth_source} do not hold the same images: "
                f"{difference}. Pass the truth the predictions were made on (--truth), or rerun evaluate on that run."
            )
    difference = _same_images(set(a.truth["ID"]), set(b.truth["ID"]), f"A ({a.name})", f"B ({b.name})")
    if difference:
        raise PipelineError(
            f"Runs A and B do not cover the same test images: {difference}. A paired comparison needs the same test "
            "images: compare runs made with the same split params (and the same data), or pass the same --truth."
        )
    truth = a.truth.sort_values("ID", ignore_index=True)
    other = b.truth.set_index("ID").loc[truth["ID"]].reset_index()
    disagree = truth["ID"][(truth[["PatientID", *LABELS]] != other[["PatientID", *LABELS]]).any(axis=1)]
    if not disagree.empty:
        raise PipelineError(
            f"The test truths of A ({a.truth_source}) and B ({b.truth_source}) disagree on the labels or patient of "
            f"{len(disagree)} images, e.g. {_examples(set(disagree))}: the runs were scored on different data."
        )
    ids = truth["ID"].to_numpy(dtype=str)
    return PairedRuns(
        ids=ids,
        groups=truth["PatientID"].to_numpy(dtype=str),
        y_true=truth[list(LABELS)].to_numpy(dtype=int),
        prob_a=a.predictions.set_index("ID").loc[ids, list(LABELS)].to_numpy(dtype=np.float64),
        prob_b=b.predictions.set_index("ID").loc[ids, list(LABELS)].to_numpy(dtype=np.float64),
    )
