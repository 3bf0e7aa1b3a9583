"""Every run of a DVC repository side by side: the rows of ``dvc exp show`` (the workspace, the baseline commit and
each experiment), each with its headline metrics and their intervals (``metrics/evaluate.json`` as that run wrote
it) and the params in which the runs differ.

Used by ``ich experiments`` (:mod:`ich.evaluation.experiments_cli`); the test predictions behind each run's curves
are read by :func:`ich.evaluation.runs.load_run`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ich.core.errors import PipelineError

__all__ = ["METRICS_FILE", "HEADLINE_FIELDS", "ExperimentRow", "list_experiments", "changed_params"]

#: The headline metrics file every run writes (the `evaluate` stage).
METRICS_FILE = "metrics/evaluate.json"
#: What the table shows of each run's headline: (column, path in the JSON, path of its interval or None, kind).
HEADLINE_FIELDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...] | None, str], ...] = (
    ("weighted log loss", ("weighted_log_loss",), ("weighted_log_loss_ci95",), "loss"),
    ("CNN weighted log loss", ("by_model", "cnn", "weighted_log_loss"), ("by_model", "cnn", "weighted_log_loss_ci95"), "loss"),
    ("mean subtype AUC", ("mean_subtype_auc",), None, "metric"),
    ("AUC any", ("any", "auc"), ("any", "auc_ci95"), "metric"),
    ("AUC epidural", ("epidural", "auc"), ("epidural", "auc_ci95"), "metric"),
)
_NOT_PARAMS = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}


@dataclass
class ExperimentRow:
    """One run: ``name`` (the experiment's name, or ``workspace`` / the baseline's revision), ``rev`` (what
    ``dvc.api.read`` and ``ich compare`` take), ``kind`` (``workspace``, ``baseline`` or ``experiment``), when it was
    made, its params (flat ``section.key`` names) and its headline metrics (None when the run has none)."""

    name: str
    rev: str
    kind: str
    created: str | None
    params: dict[str, Any]
    metrics: dict[str, Any] | None = None
    values: dict[str, tuple[float | None, list | None]] = field(default_factory=dict)


def _dig(payload: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(payload, dict) or key not in payload:
            return None
        payload = payload[key]
    return payload


def _read_metrics(repository: Path, rev: str | None) -> dict[str, Any] | None:
    try:
        if rev is None:
            text = (repository / METRICS_FILE).read_text()
        else:
            import dvc.api

            text = dvc.api.read(METRICS_FILE, repo=str(repository), rev=rev)
        return json.loads(text)
    except Exception:  # a run without the file (e.g. evaluate never ran there) shows "–"
        return None


def list_experiments(repository: str | os.PathLike) -> list[ExperimentRow]:
    """The rows of ``dvc exp show`` for ``repository``, each with its headline metrics read from its revision.

    Raises:
        PipelineError: ``repository`` is not a DVC repository.
    """
    repository = Path(repository)
    if not (repository / ".dvc").is_dir():
        raise PipelineError(f"{str(repository)!r} is not a DVC repository (no .dvc folder). Pass the project's root folder.")
    import dvc.api
    import yaml

    # exp show flattens params and metrics into one namespace: params are the keys under params.yaml's sections.
    sections = tuple(f"{name}." for name in (yaml.safe_load((repository / "params.yaml").read_text()) or {}))
    rows = []
    for entry in dvc.api.exp_show(repo=str(repository)):
        params = {
            key: int(value) if isinstance(value, float) and value.is_integer() else value  # exp show reads 4 as 4.0
            for key, value in entry.items()
            if key not in _NOT_PARAMS and key.startswith(sections)
        }
        if entry["rev"] == "workspace":
            row = ExperimentRow("workspace", "workspace", "workspace", None, params, _read_metrics(repository, None))
        elif entry.get("Experiment"):
            name = str(entry["Experiment"])
            row = ExperimentRow(name, name, "experiment", entry.get("Created"), params, _read_metrics(repository, name))
        else:
            rev = str(entry["rev"])
            row = ExperimentRow(rev, rev, "baseline", entry.get("Created"), params, _read_metrics(repository, rev))
        row.values = {
            column: (_dig(row.metrics, path), _dig(row.metrics, ci) if ci else None) for column, path, ci, _ in HEADLINE_FIELDS
        }
        rows.append(row)
    return rows


def changed_params(rows: list[ExperimentRow]) -> list[str]:
    """The params (``section.key``) whose values are not the same in every run, in params.yaml's order."""
    names: list[str] = []
    for row in rows:
        names += [name for name in row.params if name not in names]
    return [name for name in names if len({json.dumps(row.params.get(name), sort_keys=True) for row in rows}) > 1]
