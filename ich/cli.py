"""The ``ich`` command (installed by ``pip install -e .``): ``ich predict …``, ``ich evaluate-external …`` and
``ich compare A B``, the same as ``python -m ich.predict …``, ``python -m ich.evaluate_external …`` and
``python -m ich.compare A B``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

#: Subcommand -> (module, one-line summary). Modules are imported only when their command runs (TensorFlow is slow to import).
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("ich.inference.cli", "predict intracranial hemorrhage on a folder of head-CT DICOMs with a trained model"),
    "evaluate-external": ("ich.inference.external", "score a trained model on an external labelled set, without retraining"),
    "compare": ("ich.evaluation.compare_cli", "is run B better than run A? paired patient-bootstrap differences on the test set"),
    "experiments": (
        "ich.evaluation.experiments_cli",
        "every run (dvc exp show's rows) with its headline metrics; --html: any two runs' curves",
    ),
}


def _usage() -> str:
    lines = ["usage: ich COMMAND [options]   (ich COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<19} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the subcommand named by the first argument with the rest."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] in ("-h", "--help"):
        print(_usage())
        sys.exit(0 if arguments else 2)
    command, rest = arguments[0], arguments[1:]
    if command not in COMMANDS:
        print(f"ich: unknown command {command!r}; expected one of {', '.join(COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    import importlib

    importlib.import_module(COMMANDS[command][0]).main(rest, prog=f"ich {command}")


if __name__ == "__main__":
    main()
