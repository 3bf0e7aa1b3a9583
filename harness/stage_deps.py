"""The repository code each DVC stage runs, computed from its imports, against the code deps dvc.yaml lists.

A stage's code is its script (the ``-m stages.X`` of its ``cmd``) and every module of the repository's packages
(``ich``, ``stages``) that running it imports, transitively: imports at any level of a module (inside functions
too: they run when the function does), ``from pkg import submodule``, ``importlib.import_module("literal")``, and
the ``__init__.py`` of every package on the way (importing ``ich.models.recipes.cascade`` runs ``ich/__init__.py``,
``ich/models/__init__.py`` and ``ich/models/recipes/__init__.py`` first). Imports under ``if TYPE_CHECKING:`` never
run and are left out. The analysis reads source files only (nothing is imported).

    python -m harness.stage_deps --check   # exit 1 naming each stage whose ich/ and stages/ deps differ
    python -m harness.stage_deps --write   # rewrite those deps in dvc.yaml (the rest of the file unchanged)
    python -m harness.stage_deps --table   # markdown: for each module of ich/, the stages a change to it makes stale
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

__all__ = [
    "ROOT",
    "CODE_PACKAGES",
    "module_file",
    "runtime_imports",
    "code_closure",
    "stage_script",
    "computed_code_deps",
    "listed_code_deps",
    "check",
    "write",
    "downstream",
    "stale_stages",
    "table",
    "main",
]

ROOT = Path(__file__).resolve().parents[1]
#: The repository's own top-level packages: their modules are a stage's code deps, anything else is a library.
CODE_PACKAGES = ("ich", "stages")
#: Folders of package data that a package's modules read at run time (listed as deps beside the modules).
PACKAGE_DATA = ("templates",)
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_SCRIPT = re.compile(r"(?:^|\s)-m\s+([\w.]+)")
_VARIABLE = re.compile(r"\$\{\s*([\w.-]+)\s*\}")


def _is_code(path: str, packages: Iterable[str] = CODE_PACKAGES) -> bool:
    """A dvc.yaml dep that is repository code: a path in one of ``packages``."""
    return PurePosixPath(path).parts[:1] in {(package,) for package in packages}


def module_file(root: Path, module: str) -> str | None:
    """The repository path of ``module`` (``a.b`` -> ``a/b.py``, or ``a/b/__init__.py`` for a package), or None
    when no such file exists (a name imported from a module, or another distribution's module)."""
    base = root.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return (base / "__init__.py").relative_to(root).as_posix()
    if base.with_name(base.name + ".py").is_file():
        return base.with_name(base.name + ".py").relative_to(root).as_posix()
    return None


def _module_name(path: str) -> str:
    """``a/b/c.py`` -> ``a.b.c``; ``a/b/__init__.py`` -> ``a.b``."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``<anything>.TYPE_CHECKING`` (``typing.TYPE_CHECKING``)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node under ``nodes`` (function and class bodies included) except the bodies of
    ``if TYPE_CHECKING:`` (their ``else:`` runs and is kept)."""
    pending = list(nodes)
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))


def runtime_imports(root: Path, path: str) -> set[str]:
    """The absolute names of the modules the file ``path`` (relative to ``root``) may import when it runs:
    ``import a.b`` -> ``a``, ``a.b``; ``from a import b`` -> ``a``, ``a.b`` (whether ``b`` is a submodule or a
    name is left to :func:`module_file`); relative imports resolved against the file's package;
    ``importlib.import_module("a.b")`` and ``__import__("a.b")`` with a literal name; and any string constant that is
    exactly the dotted name of a module of the repository (a table of modules imported by name)."""
    tree = ast.parse((root / path).read_text(encoding="utf-8"), filename=path)
    module = _module_name(path)
    package = module if PurePosixPath(path).name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def add(name: str) -> None:
        parts = name.split(".")
        found.update(".".join(parts[: i + 1]) for i in range(len(parts)))

    for node in _runtime_nodes(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base:
                add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                if not node.args[0].value.startswith("."):
                    add(node.args[0].value)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _DOTTED.fullmatch(node.value)
            and module_file(root, node.value) is not None
        ):
            # A string that is exactly the dotted name of one of our modules: a table of modules imported by name
            # (the recipe registry's RECIPE_MODULES), counted as imported, so a change to them reruns the stage.
            add(node.value)
    return found


def code_closure(root: Path, modules: Iterable[str], packages: Iterable[str] = CODE_PACKAGES) -> set[str]:
    """The repository files that importing ``modules`` runs: each module, the ``__init__.py`` of each package
    above it, and the same for everything they import at run time, transitively (modules of ``packages`` only)."""
    packages = tuple(packages)
    files: set[str] = set()
    pending = list(modules)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen or name.split(".")[0] not in packages:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the packages above it run first, and the module itself
            path = module_file(root, ".".join(parts[:i]))
            if path is not None and path not in files:
                files.add(path)
                pending.extend(runtime_imports(root, path))
                if path.endswith("/__init__.py"):  # the package's data files (jinja2 templates) are code too
                    folder = PurePosixPath(path).parent
                    files.update((folder / data).as_posix() for data in PACKAGE_DATA if (root / folder / data).is_dir())
    return files


def stage_script(cmd: str) -> str | None:
    """The module a stage's command runs with ``python -m`` (``stages.train``), or None."""
    match = _SCRIPT.search(cmd if isinstance(cmd, str) else " ".join(cmd))
    return match.group(1) if match else None


def _load(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))


def _path(entry: str | Mapping[str, Any]) -> str:
    """The path of a deps/outs entry (``path`` or ``{path: {options}}``)."""
    return entry if isinstance(entry, str) else next(iter(entry))


def computed_code_deps(root: Path = ROOT, packages: Iterable[str] = CODE_PACKAGES) -> dict[str, list[str]]:
    """Stage -> the sorted repository files its command runs (empty for a stage that runs no ``-m`` module)."""
    result = {}
    for name, stage in (_load(root).get("stages") or {}).items():
        script = stage_script(stage.get("cmd", ""))
        result[name] = sorted(code_closure(root, [script], packages)) if script else []
    return result


def listed_code_deps(root: Path = ROOT, packages: Iterable[str] = CODE_PACKAGES) -> dict[str, list[str]]:
    """Stage -> the code deps (paths in ``packages``) dvc.yaml lists for it, in its order."""
    stages = _load(root).get("stages") or {}
    return {
        name: [_path(dep) for dep in stage.get("deps") or [] if _is_code(_path(dep), packages)] for name, stage in stages.items()
    }


def check(root: Path = ROOT, packages: Iterable[str] = CODE_PACKAGES) -> list[str]:
    """One line per stage whose listed code deps differ from the computed ones (missing, superfluous or twice)."""
    computed, listed = computed_code_deps(root, packages), listed_code_deps(root, packages)
    problems = []
    for name, needed in computed.items():
        have = listed[name]
        missing, extra = sorted(set(needed) - set(have)), sorted(set(have) - set(needed))
        twice = sorted({path for path in have if have.count(path) > 1})
        parts = [
            f"missing {missing}" if missing else "",
            f"superfluous {extra}" if extra else "",
            f"listed twice {twice}" if twice else "",
        ]
        if any(parts):
            problems.append(f"stage {name}: " + "; ".join(filter(None, parts)))
    return problems


def write(root: Path = ROOT, packages: Iterable[str] = CODE_PACKAGES) -> list[str]:
    """Rewrite the code deps of every stage in ``root/dvc.yaml`` to the computed ones: the stage's existing code
    entries are removed and the computed list (the script first, then the rest sorted) goes where the first of
    them was (after the other deps when there was none). Every other line of the file stays as it is (comments
    included). Returns the names of the stages changed."""
    from ruamel.yaml import YAML  # installed with DVC; only here, for the line numbers of the entries

    packages = tuple(packages)
    text = (root / "dvc.yaml").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    document = YAML(typ="rt").load(text)
    computed = computed_code_deps(root, packages)
    edits: list[tuple[int, int, list[str]]] = []  # (first line, last line + 1, replacement lines), applied bottom-up
    changed = []
    for name, stage in (document.get("stages") or {}).items():
        module = stage_script(stage.get("cmd", ""))
        script = module_file(root, module) if module else None
        wanted = ([script] if script else []) + [path for path in computed[name] if path != script]
        deps = stage.get("deps")
        if deps is None:
            if wanted:
                raise SystemExit(f"dvc.yaml: stage {name} has no deps list; add `deps:` with its script by hand first")
            continue
        if deps.fa.flow_style():
            raise SystemExit(f"dvc.yaml: stage {name} lists its deps in flow style ([...]); write them one a line")
        entries = [(index, _path(dep)) for index, dep in enumerate(deps)]
        code = [index for index, path in entries if _is_code(path, packages)]
        if any(not isinstance(deps[index], str) for index in code):
            raise SystemExit(f"dvc.yaml: stage {name} lists code with options (path: {{...}}); write it as a plain path")
        if [path for _, path in entries if _is_code(path, packages)] == wanted:
            continue
        changed.append(name)
        item_lines = [deps.lc.item(index)[0] for index in range(len(deps))]
        column = deps.lc.item(0)[1] if len(deps) else stage.lc.key("deps")[1] + 2
        indent = " " * (column - 2)  # lc gives the column of the value, after "- "
        replacement = [f"{indent}- {path}\n" for path in wanted]
        for index in reversed(code):  # one line each: a code entry is a plain path (maybe with a comment)
            edits.append((item_lines[index], item_lines[index] + 1, []))
        if code:
            edits.append((item_lines[code[0]], item_lines[code[0]], replacement))
        else:
            after = _entry_end(lines, item_lines[-1]) if len(deps) else stage.lc.key("deps")[0] + 1
            edits.append((after, after, replacement))
    for start, end, new in sorted(edits, key=lambda edit: (edit[0], -len(edit[2])), reverse=True):
        lines[start:end] = new
    if changed:
        (root / "dvc.yaml").write_text("".join(lines), encoding="utf-8")
    return changed


def _entry_end(lines: list[str], first: int) -> int:
    """The line after a list entry starting at line ``first`` (its continuation lines are indented deeper)."""
    indent = len(lines[first]) - len(lines[first].lstrip())
    end = first + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    while end > first + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def _variables(root: Path, document: Mapping[str, Any]) -> dict[str, Any]:
    """The values ``${...}`` refers to: params.yaml (DVC's default) and dvc.yaml's own ``vars`` mappings."""
    values: dict[str, Any] = {}
    if (root / "params.yaml").is_file():
        values.update(yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8")) or {})
    for entry in document.get("vars") or []:
        if isinstance(entry, Mapping):
            values.update(entry)
    return values


def _resolve(path: str, values: Mapping[str, Any]) -> str:
    def lookup(match: re.Match[str]) -> str:
        value: Any = values
        for key in match.group(1).split("."):
            if not isinstance(value, Mapping) or key not in value:
                return match.group(0)
            value = value[key]
        return str(value)

    return _VARIABLE.sub(lookup, path)


def _overlaps(a: str, b: str) -> bool:
    """One path is the other or inside it (``data/png`` and ``data/png/x.png``; ``data/split`` and ``data/split/train.csv``)."""
    pa, pb = PurePosixPath(a.rstrip("/")).parts, PurePosixPath(b.rstrip("/")).parts
    return pa[: len(pb)] == pb or pb[: len(pa)] == pa


def downstream(root: Path = ROOT) -> dict[str, list[str]]:
    """Stage -> the stages that depend on its outputs, directly or through others (dvc.yaml order): a stage
    depends on another when one of its deps is one of the other's outs, metrics or plots, or inside or above one."""
    document = _load(root)
    stages = document.get("stages") or {}
    values = _variables(root, document)
    outs = {
        name: [_resolve(_path(out), values) for key in ("outs", "metrics", "plots") for out in stage.get(key) or []]
        for name, stage in stages.items()
    }
    deps = {name: [_resolve(_path(dep), values) for dep in stage.get("deps") or []] for name, stage in stages.items()}
    direct = {
        name: {other for other in stages if other != name and any(_overlaps(d, o) for d in deps[other] for o in outs[name])}
        for name in stages
    }
    result = {}
    for name in stages:
        reached, pending = set(), list(direct[name])
        while pending:
            other = pending.pop()
            if other not in reached:
                reached.add(other)
                pending.extend(direct[other])
        result[name] = [other for other in stages if other in reached]
    return result


def stale_stages(root: Path = ROOT, packages: Iterable[str] = CODE_PACKAGES) -> dict[str, tuple[list[str], list[str]]]:
    """Each ``.py`` file of the packages -> (the stages whose dvc.yaml deps list it, those and every stage
    downstream of them), in dvc.yaml order: what ``dvc repro`` reruns after a change to that file."""
    listed = listed_code_deps(root, packages)
    order = list(listed)
    later = downstream(root)
    result = {}
    for package in packages:
        for path in sorted(p.relative_to(root).as_posix() for p in (root / package).rglob("*.py")):
            direct = [name for name in order if path in listed[name]]
            stale = set(direct).union(*(later[name] for name in direct)) if direct else set()
            result[path] = (direct, [name for name in order if name in stale])
    return result


def table(root: Path = ROOT, packages: Iterable[str] = ("ich",)) -> str:
    """A markdown table of :func:`stale_stages` for the modules of ``packages`` (by default the library)."""
    rows = [
        "| module | stages listing it | stale after a change (with the stages downstream, which rerun if its outputs change) |",
        "| --- | --- | --- |",
    ]
    for path, (direct, stale) in stale_stages(root, packages).items():
        rows.append(f"| `{path}` | {', '.join(direct) or '—'} | {', '.join(stale) or '—'} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.stage_deps", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1 when a stage's ich/ or stages/ deps differ (the default)")
    action.add_argument("--write", action="store_true", help="rewrite every stage's ich/ and stages/ deps in dvc.yaml")
    action.add_argument("--table", action="store_true", help="print, for each module of ich/, the stages a change makes stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    if args.write:
        changed = write(args.root)
        print(f"dvc.yaml: rewrote the code deps of {', '.join(changed)}" if changed else "dvc.yaml: already up to date")
        return 0
    if args.table:
        sys.stdout.write(table(args.root))
        return 0
    problems = check(args.root)
    for problem in problems:
        print(problem)
    if problems:
        print("fix: python -m harness.stage_deps --write", file=sys.stderr)
        return 1
    print("dvc.yaml: every stage lists exactly the code it runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
