"""``python -m ich.compare A B``: the stable entry point of ``ich compare`` (is run B better than run A?), and the
names of :mod:`ich.evaluation.compare_cli`, :mod:`ich.evaluation.paired` and :mod:`ich.evaluation.runs`."""

from ich.evaluation.compare_cli import TABLE_COLUMNS, build_parser, comparison_table, main, run_compare, verdict_line
from ich.evaluation.paired import MetricDifference, paired_comparison
from ich.evaluation.runs import PairedRuns, Run, find_repository, load_run, pair_runs

__all__ = [
    "TABLE_COLUMNS",
    "build_parser",
    "comparison_table",
    "verdict_line",
    "run_compare",
    "main",
    "MetricDifference",
    "paired_comparison",
    "Run",
    "PairedRuns",
    "find_repository",
    "load_run",
    "pair_runs",
]

if __name__ == "__main__":
    main()
