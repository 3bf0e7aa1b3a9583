"""The code each stage runs (harness/stage_deps.py), on a tiny synthetic project whose answers are written out by
hand; and ich's import contracts (pyproject.toml [tool.importlinter], checked by lint-imports)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from harness import stage_deps
from harness.project import ROOT

FILES = {
    "ich/__init__.py": "",
    "ich/core/__init__.py": "",
    "ich/core/base.py": "X = 1\n",
    # a function-level import, and relative ones (from the package and from the one above)
    "ich/core/lazy.py": """
        from .base import X
        from ..relative import Y


        def f():
            from ich.extra import thing

            return thing
        """,
    "ich/relative.py": "Y = 2\n",
    "ich/extra/__init__.py": "",
    # under TYPE_CHECKING: never runs; its else: does
    "ich/extra/thing.py": """
        import typing
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from ich.typed import T
        else:
            import ich.runtime_else

        if typing.TYPE_CHECKING:
            import ich.typed_too
        """,
    "ich/typed.py": "T = int\n",
    "ich/typed_too.py": "",
    "ich/runtime_else.py": "",
    "ich/sub/__init__.py": "",
    "ich/sub/deep/__init__.py": "",
    "ich/sub/deep/leaf.py": "",
    "ich/fromsub/__init__.py": "NAME = 'a name, not a module'\n",
    "ich/fromsub/a.py": "",
    "ich/fromsub/b.py": "",
    "ich/dynamic.py": "",
    "ich/unused.py": "",
    "stages/__init__.py": "",
    "stages/one.py": """
        import os

        import ich.sub.deep.leaf
        from ich.core import base, lazy
        from ich.fromsub import NAME, a


        class Stage:
            def run(self):
                import importlib

                return importlib.import_module("ich.dynamic")
        """,
    "stages/two.py": "from ich.core.base import X\n",
    "stages/three.py": "import json\n",
    # not in dvc.yaml: modules named in a table and imported by name later, a docstring naming one, package data
    "stages/four.py": """
        \"\"\"Mentions ich.unused in a sentence, which imports nothing.\"\"\"

        TABLE = {"x": "ich.tabled", "y": "not.a.module"}
        """,
    "ich/tabled/__init__.py": "",
    "ich/tabled/templates/page.html": "<p>{{ x }}</p>\n",
}

#: What running `python -m stages.one` imports, worked out by hand from FILES.
ONE = {
    "stages/__init__.py",
    "stages/one.py",
    "ich/__init__.py",
    "ich/sub/__init__.py",
    "ich/sub/deep/__init__.py",
    "ich/sub/deep/leaf.py",
    "ich/core/__init__.py",
    "ich/core/base.py",
    "ich/core/lazy.py",
    "ich/relative.py",
    "ich/extra/__init__.py",
    "ich/extra/thing.py",
    "ich/runtime_else.py",
    "ich/fromsub/__init__.py",
    "ich/fromsub/a.py",
    "ich/dynamic.py",
}
TWO = {"stages/__init__.py", "stages/two.py", "ich/__init__.py", "ich/core/__init__.py", "ich/core/base.py"}
THREE = {"stages/__init__.py", "stages/three.py"}

DVC_YAML = """\
# the synthetic pipeline
stages:
  one:
    cmd: python -m stages.one
    deps:
      - data/in.csv  # the input
      - stages/one.py
      - ich/unused.py
    outs:
      - data/mid

  two:
    # a comment inside the stage
    cmd: FLAG=${flags.two} python -m stages.two --fast
    deps:
      - data/mid/part.csv
    outs:
      - data/out.csv

  three:
    cmd: python -m stages.three
    deps:
      - ${paths.input}
      - stages/three.py
    metrics:
      - metrics/three.json:
          cache: false
"""


@pytest.fixture
def project(tmp_path):
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text).lstrip())
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "params.yaml").write_text("flags:\n  two: 1\npaths:\n  input: data/out.csv\n")
    return tmp_path


def test_function_level_imports_and_from_package_import_submodule_are_followed_and_type_checking_is_not(project):
    assert stage_deps.code_closure(project, ["stages.one"]) == ONE
    assert stage_deps.code_closure(project, ["stages.two"]) == TWO
    assert stage_deps.computed_code_deps(project) == {"one": sorted(ONE), "two": sorted(TWO), "three": sorted(THREE)}


def test_modules_named_in_a_table_are_followed_and_a_package_s_templates_are_code(project):
    four = {"stages/__init__.py", "stages/four.py", "ich/__init__.py", "ich/tabled/__init__.py", "ich/tabled/templates"}
    assert stage_deps.code_closure(project, ["stages.four"]) == four


def test_runtime_imports_of_one_file(project):
    found = stage_deps.runtime_imports(project, "ich/extra/thing.py")
    assert {"ich", "ich.runtime_else", "typing"} <= found
    assert not {"ich.typed", "ich.typed_too"} & found
    assert stage_deps.runtime_imports(project, "ich/core/lazy.py") >= {"ich.core.base", "ich.relative", "ich.extra.thing"}


def test_check_names_missing_and_superfluous_code_and_write_fixes_only_those_lines(project, capsys):
    problems = stage_deps.check(project)
    assert len(problems) == 3
    assert problems[0].startswith("stage one: missing [") and "superfluous ['ich/unused.py']" in problems[0]
    assert stage_deps.main(["--check", "--root", str(project)]) == 1

    assert stage_deps.write(project) == ["one", "two", "three"]
    assert stage_deps.check(project) == []
    assert stage_deps.main(["--check", "--root", str(project)]) == 0
    assert stage_deps.write(project) == []  # nothing left to change
    text = (project / "dvc.yaml").read_text()
    # the comments, the blank lines and every non-code entry stay where they were; the script comes first
    lines = text.splitlines()
    assert lines[:6] == [
        "# the synthetic pipeline",
        "stages:",
        "  one:",
        "    cmd: python -m stages.one",
        "    deps:",
        "      - data/in.csv  # the input",
    ]
    assert lines[6] == "      - stages/one.py"
    assert "    # a comment inside the stage" in lines and "" in lines
    written = yaml.safe_load(text)["stages"]
    assert written["one"]["deps"] == ["data/in.csv", "stages/one.py", *sorted(ONE - {"stages/one.py"})]
    assert written["two"]["deps"] == ["data/mid/part.csv", "stages/two.py", *sorted(TWO - {"stages/two.py"})]
    assert written["three"]["deps"] == ["${paths.input}", "stages/three.py", "stages/__init__.py"]
    original = yaml.safe_load(DVC_YAML)["stages"]
    for name, stage in written.items():
        assert {k: v for k, v in stage.items() if k != "deps"} == {k: v for k, v in original[name].items() if k != "deps"}


def test_downstream_follows_outs_into_deps_and_the_table_names_every_stage_made_stale(project):
    # two reads a file inside one's out folder; three reads two's out through a ${} from params.yaml
    assert stage_deps.downstream(project) == {"one": ["two", "three"], "two": ["three"], "three": []}
    stage_deps.write(project)
    stale = stage_deps.stale_stages(project, ["ich"])
    assert stale["ich/core/base.py"] == (["one", "two"], ["one", "two", "three"])
    assert stale["ich/fromsub/a.py"] == (["one"], ["one", "two", "three"])
    assert stale["ich/typed.py"] == ([], []) and stale["ich/unused.py"] == ([], [])
    table = stage_deps.table(project)
    assert "| `ich/core/lazy.py` | one | one, two, three |" in table
    assert "| `ich/unused.py` | — | — |" in table
    assert len(table.splitlines()) == 2 + sum(name.startswith("ich/") and name.endswith(".py") for name in FILES)


def test_import_contracts_hold():
    """pyproject.toml's [tool.importlinter] contracts: layers between ich's subpackages, the library never
    importing stages, inference never importing training, core, reports and imaging importing only core."""
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if command is None:
        pytest.skip("lint-imports (import-linter) is not installed")
    result = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_stage_depends_on_exactly_the_code_it_runs():
    """Each stage's ich/ and stages/ deps in dvc.yaml are its script and every module it imports at run time
    (harness/stage_deps.py: function-level imports and package __init__ files included, TYPE_CHECKING left out):
    none missing (a change would not rerun the stage), none superfluous (a change would rerun it for nothing)."""
    problems = stage_deps.check(stage_deps.ROOT)
    assert not problems, "\n".join(problems) + "\nrun: python -m harness.stage_deps --write"
