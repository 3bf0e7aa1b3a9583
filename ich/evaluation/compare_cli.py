"""`ich compare A B`: is run B better than run A on the same test images?

    ich compare HEAD my-experiment                  # the committed run vs a DVC experiment
    ich compare v1 data/predictions --json c.json   # a tag vs the workspace's predictions
    python -m ich.compare A B --html compare.html   # the same; an offline page with both runs' curves

A and B are each a predictions folder holding ``test.csv`` (or the CSV), a git revision or a DVC experiment name
(:mod:`ich.evaluation.runs`). Prints a table of the weighted log loss, each label's AUC and the mean subtype AUC
of A and B with the paired patient-bootstrap difference ``B - A``, its 95 % interval and the share of draws in
which B is better (:mod:`ich.evaluation.paired`), and a verdict on the weighted log loss. ``--json`` writes all of
it; ``--html`` writes the page (:mod:`ich.reports.compare_page`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ich.core.errors import PipelineError
from ich.core.files import write_json
from ich.evaluation.bootstrap import CI_LEVEL
from ich.evaluation.paired import BETTER, NO_DIFFERENCE, UNDEFINED, WORSE, MetricDifference, paired_comparison
from ich.evaluation.runs import find_repository, load_run, pair_runs
from ich.reports.formatting import formatted, interval, probability

__all__ = ["TABLE_COLUMNS", "build_parser", "comparison_table", "verdict_line", "run_compare", "main"]

_PROG = "python -m ich.compare"
#: Headings of the printed table, in order.
TABLE_COLUMNS = ("metric", "A", "B", "B - A", "95% CI of B - A", "B better", "verdict")


def build_parser(prog: str = _PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Is run B better than run A? The paired patient-bootstrap difference B - A of the weighted log loss "
        "and of each AUC on the same test images.",
    )
    run_help = "a folder holding test.csv (e.g. data/predictions), a git revision (commit, branch, tag) or a DVC experiment name"
    parser.add_argument("a", metavar="A", help=f"the baseline run: {run_help}")
    parser.add_argument("b", metavar="B", help=f"the candidate run: {run_help}")
    parser.add_argument("--draws", type=int, default=1000, help="patient resamples of the bootstrap (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--json", metavar="PATH", help="write the comparison as JSON to PATH")
    parser.add_argument("--html", metavar="PATH", help="write an offline page with both runs' ROC and precision-recall curves")
    parser.add_argument(
        "--truth",
        metavar="PATH",
        help="the test truth of a folder run (ID, six labels, PatientID); default: the repository's data/split/test.csv",
    )
    parser.add_argument(
        "--repo",
        metavar="PATH",
        help="the DVC repository of revisions and experiments; default: the one holding the working directory",
    )
    return parser


def comparison_table(rows: Sequence[MetricDifference]) -> str:
    """The table :data:`TABLE_COLUMNS`, one line per metric, numbers written by :mod:`ich.reports.formatting`."""
    lines = [list(TABLE_COLUMNS)]
    for row in rows:
        lines.append(
            [
                row.name,
                formatted(row.a, row.kind),
                formatted(row.b, row.kind),
                formatted(row.difference, row.kind),
                interval(row.difference_ci95, row.kind),
                probability(row.share_b_better),
                row.verdict,
            ]
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(TABLE_COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if column in (0, 6) else cell.rjust(width) for column, (cell, width) in enumerate(zip(line, widths))
        ).rstrip()
        for line in lines
    )


def verdict_line(headline: MetricDifference) -> str:
    """One line on the headline metric (the weighted log loss): better, worse or no difference the data can show."""
    if headline.verdict == UNDEFINED:
        return f"No verdict: {headline.name} has no interval (undefined for a run, or too few draws)."
    numbers = (
        f"{headline.name} B - A = {formatted(headline.difference, headline.kind)}, "
        f"95% CI {interval(headline.difference_ci95, headline.kind)}; B better in {probability(headline.share_b_better)} "
        "of the draws"
    )
    if headline.verdict == NO_DIFFERENCE:
        return f"No difference the data can show: {numbers} (the interval includes 0)."
    return f"B is {'better' if headline.verdict == BETTER else 'worse'} than A beyond the bootstrap interval: {numbers}."


def _auc_line(rows: Sequence[MetricDifference]) -> str:
    """Which AUCs differ beyond their interval, if any."""
    beyond = [
        f"{row.name} ({'B higher' if row.verdict == BETTER else 'B lower'})" for row in rows[1:] if row.verdict in (BETTER, WORSE)
    ]
    return f"AUCs beyond their interval: {', '.join(beyond)}." if beyond else "No AUC differs beyond its interval."


def run_compare(args: argparse.Namespace) -> dict[str, object]:
    """The command's work after parsing: read both runs, compare, print, write; returns what ``--json`` holds.

    Raises:
        PipelineError: a run that cannot be read, or runs that do not cover the same images with the same truth.
    """
    if args.draws < 1:
        raise PipelineError(f"--draws must be at least 1 (1000 gives stable 95% intervals). Received: {args.draws}")
    repository = Path(args.repo) if args.repo else find_repository()
    if args.repo and not (Path(args.repo) / ".dvc").is_dir():
        raise PipelineError(f"--repo {args.repo!r} is not a DVC repository (no .dvc folder). Pass the project's root folder.")
    run_a = load_run(args.a, repository, args.truth)
    run_b = load_run(args.b, repository, args.truth)
    paired = pair_runs(run_a, run_b)
    rows = paired_comparison(paired.y_true, paired.prob_a, paired.prob_b, paired.groups, args.draws, args.seed)
    verdict = verdict_line(rows[0])
    patients = len(set(paired.groups))
    print(
        f"A: {args.a}   B: {args.b}   {len(paired.ids)} test images of {patients} patients; {args.draws} paired patient resamples (seed {args.seed})"
    )
    print(comparison_table(rows))
    print(verdict)
    print(_auc_line(rows))
    result: dict[str, object] = {
        "a": run_a.describe(),
        "b": run_b.describe(),
        "images": len(paired.ids),
        "patients": patients,
        "draws": args.draws,
        "seed": args.seed,
        "ci_level": CI_LEVEL,
        "verdict": verdict,
        "metrics": {row.name: {key: value for key, value in asdict(row).items() if key != "name"} for row in rows},
    }
    if args.json:
        write_json(result, args.json)
    if args.html:
        from ich.reports.compare_page import write_compare_page

        settings = [
            ("test images", f"{len(paired.ids)} images of {patients} patients"),
            ("bootstrap", f"{args.draws} paired patient resamples, seed {args.seed}, {CI_LEVEL:.0%} percentile intervals"),
        ]
        write_compare_page(
            args.html,
            f"Is B ({args.b}) better than A ({args.a})?",
            [run_a.describe(), run_b.describe()],
            [asdict(row) for row in rows],
            verdict,
            settings,
            paired.y_true,
            {f"A: {args.a}": paired.prob_a, f"B: {args.b}": paired.prob_b},
        )
    for path in (args.json, args.html):
        if path:
            print(f"wrote {path}", file=sys.stderr)
    return result


def main(argv: Sequence[str] | None = None, prog: str = _PROG) -> None:
    """The command line (see the module docstring): errors a user can fix print one line and exit 1."""
    from ich.core.runner import run_stage

    args = build_parser(prog).parse_args(argv)

    def work() -> None:
        run_compare(args)

    run_stage(work)


if __name__ == "__main__":
    main()
