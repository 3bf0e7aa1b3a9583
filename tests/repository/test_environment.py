"""requirements.lock pins the whole environment that requirements.txt's top-level list resolves to."""

from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK_COMMAND = (
    "uv pip compile requirements.txt --python-version 3.11 --python-platform x86_64-manylinux_2_28 "
    "--generate-hashes --output-file requirements.lock"
)


def logical_lines(path: Path) -> list[str]:
    """The requirement lines of a pip requirements file: continuations joined, comments and blanks dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(" ".join(current.split()))
        current = ""
    return lines


def parse(path: Path) -> dict[str, tuple[Requirement, list[str]]]:
    """Canonical name -> (requirement, its ``--hash`` options) for every line of ``path``."""
    parsed = {}
    for line in logical_lines(path):
        requirement_text, *options = line.split(" --")
        requirement = Requirement(requirement_text.strip())
        name = canonicalize_name(requirement.name)
        assert name not in parsed, f"{path.name} lists {name} twice"
        parsed[name] = (requirement, [option.strip() for option in options])
    return parsed


def pinned_version(requirement: Requirement) -> str:
    """The version of an exact ``name==version`` pin; fails on anything looser."""
    specifiers = list(requirement.specifier)
    assert len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version, (
        f"{requirement} is not an exact == pin"
    )
    assert requirement.url is None and requirement.marker is None, f"{requirement} has a URL or a marker"
    return specifiers[0].version


def test_logical_lines_join_continuations_and_drop_comments(tmp_path):
    lock = tmp_path / "example.lock"
    lock.write_text("# header\nabc==1.0 \\\n    --hash=sha256:00 \\\n    --hash=sha256:11\n    # via x\n\nDef_Ghi==2  # why\n")
    assert logical_lines(lock) == ["abc==1.0 --hash=sha256:00 --hash=sha256:11", "Def_Ghi==2"]
    parsed = parse(lock)
    assert sorted(parsed) == ["abc", "def-ghi"]
    assert parsed["abc"][1] == ["hash=sha256:00", "hash=sha256:11"]


def test_every_lock_line_is_an_exact_pin_with_hashes():
    # Resolved for Python 3.11 on Linux x86-64, by the command the error messages below give.
    assert f"#    {LOCK_COMMAND}" in (ROOT / "requirements.lock").read_text().splitlines()[:3]
    lock = parse(ROOT / "requirements.lock")
    assert len(lock) > 100  # the whole environment, not only the top level
    for name, (requirement, options) in lock.items():
        pinned_version(requirement)
        assert options and all(option.startswith("hash=sha256:") for option in options), f"{name} has no sha256 hash"


def test_lock_pins_every_top_level_requirement_at_its_version():
    top_level = parse(ROOT / "requirements.txt")
    lock = parse(ROOT / "requirements.lock")
    assert "pydantic" in top_level
    for name, (requirement, _) in top_level.items():
        assert name in lock, f"requirements.lock lacks {name}: regenerate it with {LOCK_COMMAND}"
        assert pinned_version(lock[name][0]) == pinned_version(requirement), (
            f"{name}: requirements.txt pins {pinned_version(requirement)}, requirements.lock "
            f"{pinned_version(lock[name][0])}: regenerate the lock with {LOCK_COMMAND}"
        )
