"""`ich experiments`: every run of the repository side by side, and an offline page to compare any two.

    ich experiments                              # a table: each run's headline metrics with their 95 % intervals
    ich experiments --html plots/experiments.html  # the page: the table, and any two runs' curves overlaid
    ich compare seed-1 seed-2                     # then: is one better than the other (paired bootstrap)?

The runs are the rows of ``dvc exp show`` (the workspace, the baseline commit, each experiment); each row's metrics
are the ``metrics/evaluate.json`` that run wrote (:mod:`ich.evaluation.experiments`), the params shown are those in
which the runs differ, and the page's curves come from each run's test predictions
(:func:`ich.evaluation.runs.load_run`). The spread of the weighted log loss over the runs is printed with the table:
when the runs differ only by ``train.seed`` it is the run-to-run noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ich.core.errors import PipelineError
from ich.core.files import write_json
from ich.evaluation.experiments import HEADLINE_FIELDS, ExperimentRow, changed_params, list_experiments
from ich.evaluation.runs import find_repository, load_run
from ich.reports.formatting import formatted, interval

__all__ = ["build_parser", "experiments_table", "run_experiments", "main"]

_PROG = "python -m ich.evaluation.experiments_cli"


def build_parser(prog: str = _PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Every run of the repository (dvc exp show's rows) with its headline metrics and their intervals."
    )
    parser.add_argument("--html", metavar="PATH", help="write an offline page: the table, and any two runs' curves overlaid")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON to PATH")
    parser.add_argument("--repo", metavar="PATH", help="the DVC repository; default: the one holding the working directory")
    return parser


def experiments_table(rows: Sequence[ExperimentRow], params: Sequence[str]) -> str:
    """One line per run: its name, the changed params, and each headline value with its interval."""
    header = ["run", *params, *(column for column, *_ in HEADLINE_FIELDS)]
    kinds = {column: kind for column, _, _, kind in HEADLINE_FIELDS}
    lines = [header]
    for row in rows:
        cells = [row.name, *(str(row.params.get(name, "–")) for name in params)]
        for column, *_ in HEADLINE_FIELDS:
            value, ci = row.values[column]
            cells.append(formatted(value, kinds[column]) + (f" {interval(ci, kinds[column])}" if ci else ""))
        lines.append(cells)
    widths = [max(len(line[index]) for line in lines) for index in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def _spread(rows: Sequence[ExperimentRow]) -> str | None:
    # The workspace is left out: after `dvc exp run` or `dvc exp apply` it repeats a run of the list.
    found = [row.values["weighted log loss"][0] for row in rows if row.kind != "workspace"]
    losses = [float(loss) for loss in found if loss is not None]
    if len(losses) < 3:
        return None
    return (
        f"weighted log loss over {len(losses)} runs: mean {statistics.mean(losses):.4f}, standard deviation "
        f"{statistics.stdev(losses):.4f}, range {min(losses):.4f}-{max(losses):.4f}, workspace left out (when the runs differ "
        "only by train.seed, this is the run-to-run noise)"
    )


def run_experiments(args: argparse.Namespace) -> dict[str, object]:
    repository = Path(args.repo) if args.repo else find_repository()
    if repository is None:
        raise PipelineError("Not inside a DVC repository; run it in the project's folder or pass --repo.")
    rows = list_experiments(repository)
    params = changed_params(rows)
    spread = _spread(rows)
    print(experiments_table(rows, params))
    if spread:
        print(spread)
    print("Is one run better than another? ich compare A B (the paired bootstrap on the same test images).")
    result: dict[str, object] = {
        "repository": str(repository),
        "changed_params": params,
        "runs": [
            {
                "name": row.name,
                "rev": row.rev,
                "kind": row.kind,
                "created": row.created,
                "params": {name: row.params.get(name) for name in params},
                "headline": row.metrics,
            }
            for row in rows
        ],
    }
    if args.json:
        write_json(result, args.json)
    if args.html:
        from ich.reports.experiments_page import curve_points, pick_two_spec, write_experiments_page

        probabilities, notes, truth = {}, [], None
        for row in rows:
            try:
                run = load_run(str(repository / "data/predictions") if row.kind == "workspace" else row.rev, repository)
            except PipelineError as error:
                notes.append(f"{row.name}: no curves ({error})")
                continue
            ordered = run.truth.sort_values("ID")
            if truth is None:
                truth = ordered
            elif list(ordered["ID"]) != list(truth["ID"]):
                notes.append(f"{row.name}: no curves (its test images differ from {rows[0].name}'s)")
                continue
            predictions = run.predictions.set_index("ID").loc[truth["ID"]]
            probabilities[row.name] = predictions.to_numpy(dtype=np.float64)
        if spread:
            notes.insert(0, spread)
        spec = None
        if probabilities and truth is not None:
            from ich.core.labels import LABELS

            spec = pick_two_spec(curve_points(truth[list(LABELS)].to_numpy(), probabilities), list(probabilities))
        write_experiments_page(
            args.html,
            title=f"ICH experiments: {len(rows)} runs of {repository.name}",
            columns=[{"name": column, "kind": kind} for column, _, _, kind in HEADLINE_FIELDS],
            rows=[vars(row) for row in rows],
            params=params,
            notes=notes,
            spec=spec,
        )
        print(f"wrote {args.html}", file=sys.stderr)
    return result


def main(argv: Sequence[str] | None = None, prog: str = _PROG) -> None:
    from ich.core.runner import run_stage

    args = build_parser(prog).parse_args(argv)

    def work() -> None:
        run_experiments(args)

    run_stage(work)


if __name__ == "__main__":
    main()
