"""The headline of an evaluation: the few numbers ``dvc metrics diff`` and ``dvc exp show`` compare run to run.

``metrics/evaluate.json`` holds only these; everything else the evaluate stage computes (metrics at the fixed
0.5 threshold, the series level, each model's full block, prevalence, macro averages) goes to
``metrics/evaluate_detail.json``, which the report reads and which is no DVC metric. Keys:

- per label (``any``, ``epidural``, ...): ``auc`` and ``auc_ci95`` (patient bootstrap; None when undefined), and
  ``accuracy``, ``precision``, ``recall``, ``f1`` at the validation-tuned ``threshold``;
- ``weighted_log_loss``, ``weighted_log_loss_ci95``, ``mean_subtype_auc``;
- with a sequence model, ``by_model.cnn`` and ``by_model.sequence``: each model's ``weighted_log_loss`` (with its
  interval) and ``mean_subtype_auc``; and ``context_gain``: the paired change in weighted log loss from the CNN
  to the sequence model with its interval and the share of draws in which it helped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ich.core.labels import LABELS

__all__ = ["TUNED_KEYS", "headline"]

#: The per-label figures at the validation-tuned threshold, in the order they are written.
TUNED_KEYS: tuple[str, ...] = ("threshold", "accuracy", "precision", "recall", "f1")
_OVERALL = ("weighted_log_loss", "weighted_log_loss_ci95", "mean_subtype_auc")
_GAIN = ("change", "change_ci95", "relative_change", "share_of_draws_better")


def _label(entry: Mapping[str, Any]) -> dict[str, Any]:
    tuned = entry.get("tuned") or {}
    return {"auc": entry.get("auc"), "auc_ci95": entry.get("auc_ci95"), **{key: tuned.get(key) for key in TUNED_KEYS}}


def headline(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The headline of the evaluate stage's full result (:func:`ich.evaluation.metrics.evaluate_predictions`, plus
    ``by_model`` and ``context_gain`` when there is a sequence model): see the module docstring for its keys."""
    result: dict[str, Any] = {label: _label(detail[label]) for label in LABELS}
    result.update({key: detail.get(key) for key in _OVERALL})
    if "by_model" in detail:
        result["by_model"] = {name: {key: block.get(key) for key in _OVERALL} for name, block in detail["by_model"].items()}
    if "context_gain" in detail:
        result["context_gain"] = {key: detail["context_gain"].get(key) for key in _GAIN}
    return result
