"""No committed text file names a directory of one particular machine.

Paths such as ``/home/alice/...``, ``/root/...``, ``/work/...``, ``/tmp/xyz``, ``/Users/...`` or
``C:\\Users\\...`` mean nothing on another machine and leak where a file was made; commands in
docs and reports use ``python``, ``$MACE_VENV`` or paths relative to the repository instead.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A machine path: one of these roots followed by a name (not a bare "/tmp/" in prose).
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~$/-])(?:/(?:home|root|work|Users|tmp|scratch|mnt|opt/conda)/[A-Za-z0-9_.~-]"
    r"|[A-Za-z]:\\\\?(?:Users|home|work)\\)"
)

# file → why its hits are not a machine's paths. Keep this list short.
ALLOWED: dict[str, str] = {
    "tests/test_no_absolute_paths.py": "describes the forbidden patterns",
}

TEXT_SUFFIXES = {
    ".py",
    ".md",
    ".json",
    ".txt",
    ".toml",
    ".cfg",
    ".ini",
    ".yaml",
    ".yml",
    ".sh",
    ".rst",
    ".xyz",
    ".csv",
    ".in",
    "",
}


def tracked_text_files() -> list[Path]:
    """Every git-tracked file with a text suffix (a checkout without git skips the test)."""
    try:
        done = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    names = [n for n in done.stdout.decode().split("\0") if n]
    return [ROOT / n for n in names if Path(n).suffix in TEXT_SUFFIXES and (ROOT / n).is_file()]


def machine_paths(path: Path) -> list[str]:
    """``"line N: match"`` for each machine path in one file (binary files give none)."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return []
    text = data.decode("utf-8", errors="replace")
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in ABSOLUTE_PATH.finditer(line):
            hits.append(f"line {number}: {line[match.start() : match.start() + 60].strip()}")
    return hits


@pytest.mark.parametrize(
    "line, found",
    [
        ("python=/work/venvs/mace/bin/python", True),
        ("see /home/alice/data.xyz", True),
        ("`/root/.pyenv/versions/3.11.7/bin/python`", True),
        ("wrote /tmp/pytest-of-x/model.json", True),
        ("/Users/bob/x", True),
        ("C:\\Users\\bob\\x", True),
        ("$MACE_VENV/bin/python scripts/make_mace_reference.py", False),
        ("ase_equi/models/metals.json and docs/zoo/metals.json", False),
        ("files under /tmp/ are removed", False),
        ("eV/Å and meV/Å³, a/b/work/c", False),
    ],
)
def test_pattern_finds_machine_paths(tmp_path, line, found):
    path = tmp_path / "planted.md"
    path.write_text(f"text\n{line}\n")
    assert bool(machine_paths(path)) is found


def test_no_tracked_file_names_a_machine_path():
    offenders = {}
    for path in tracked_text_files():
        name = path.relative_to(ROOT).as_posix()
        if name in ALLOWED:
            continue
        hits = machine_paths(path)
        if hits:
            offenders[name] = hits[:3]
    assert not offenders, f"absolute machine paths in committed files: {offenders}"
