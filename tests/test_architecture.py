"""The house rules of docs/architecture.md, checked on the source.

Every module under ``ase_equi/`` is parsed with :mod:`ast` (nothing is imported, so a broken
module cannot hide a rule break); its imports (relative ones, those inside functions and under
``TYPE_CHECKING`` included) are resolved to absolute module names. Checked: who may import whom
(the stage table of the architecture page; nothing imports ``cli/``; argparse in ``cli/`` only;
no private name imported across modules; no old path of ``ase_equi._moved.MOVED`` used inside
the package); module and function sizes (the "Long because" marker); the public API against
the page; the page, CHANGELOG and pre-commit against the code and CI; and, in a child process,
that every old path imports with a DeprecationWarning and yields the new module's objects.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ase_equi"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_MARKER = "Long because"
MAX_PUBLIC_NAMES = 12
STDLIB = frozenset(sys.stdlib_module_names)


@dataclass(frozen=True)
class Import:
    """One imported module: ``target`` (absolute dotted name) at ``line`` of module ``source``."""

    source: str
    target: str
    line: int
    names: tuple[str, ...] = ()  # the names of a ``from target import a, b``

    def __str__(self) -> str:
        return f"{self.source} (line {self.line}) imports {self.target}"


def module_name(path: Path) -> str:
    """``ase_equi/model/mace.py`` -> ``ase_equi.model.mace``; a package's ``__init__.py`` -> it."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {
    module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if "__pycache__" not in path.parts
}


def parse(name: str) -> ast.Module:
    path = MODULES[name]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imports_of(name: str) -> list[Import]:
    """Every module that ``name`` imports, as absolute names.

    ``from X import a`` imports X (its ``__init__`` runs), and X.a as well when X.a is one of
    our modules. Relative imports are resolved against the module's package.
    """
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(parse(name)):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = tuple(alias.name for alias in node.names)
            found.append(Import(name, target, node.lineno, names))
            found += [
                Import(name, f"{target}.{n}", node.lineno)
                for n in names
                if f"{target}.{n}" in MODULES
            ]
    return found


ALL_IMPORTS: list[Import] = [imp for name in MODULES for imp in imports_of(name)]


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    """``module`` is one of ``prefixes`` or inside one of them (dotted boundary)."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def top(module: str) -> str:
    return module.partition(".")[0]


# == who may import whom =========================================================================

# What each stage may import from inside ase_equi (besides itself); stages not named: no rule.
INTERNAL_ALLOWED: dict[str, tuple[str, ...]] = {
    "ase_equi.errors": (),
    "ase_equi.neighbours": ("ase_equi.errors",),
    "ase_equi.graph.tensors": ("ase_equi.errors", "ase_equi.graph.layout"),
    "ase_equi.graph.layout": ("ase_equi.errors", "ase_equi.graph.tensors"),
    "ase_equi.graph": ("ase_equi.errors", "ase_equi.neighbours"),
    "ase_equi.model": ("ase_equi.errors", "ase_equi.graph.tensors", "ase_equi.graph.layout"),
}
# What each stage may import from outside ase_equi (besides the standard library).
EXTERNAL_ALLOWED: dict[str, tuple[str, ...]] = {
    "ase_equi.errors": (),
    "ase_equi.neighbours": ("ase", "numpy", "matscipy", "torch"),
    "ase_equi.graph.tensors": ("torch", "numpy"),
    "ase_equi.graph.layout": ("torch", "numpy"),
    "ase_equi.model": ("torch", "e3nn", "numpy"),
}
# What io/ must never import: the layers above it.
ABOVE_IO = tuple(
    f"ase_equi.{m}"
    for m in "calculator calculator_options loading zoo evaluate data training cli".split()
)


def stage_of(module: str, table: dict[str, tuple[str, ...]]) -> str | None:
    """The most specific key of ``table`` that contains ``module``."""
    keys = [k for k in table if within(module, (k,))]
    return max(keys, key=len) if keys else None


def test_stage_rules_cover_the_target_layout():
    """The rules below name real modules: a renamed stage must not switch its rules off."""
    for stage in [*INTERNAL_ALLOWED, "ase_equi.io", "ase_equi.cli", "ase_equi.errors"]:
        assert stage in MODULES, f"{stage} is not a module or package of ase_equi"


def test_internal_imports_follow_the_stages():
    wrong = []
    for imp in ALL_IMPORTS:
        stage = stage_of(imp.source, INTERNAL_ALLOWED)
        if stage is None or top(imp.target) != "ase_equi" or within(imp.target, (stage,)):
            continue
        if not within(imp.target, INTERNAL_ALLOWED[stage]):
            wrong.append(f"{imp} (allowed inside ase_equi: {', '.join(INTERNAL_ALLOWED[stage])})")
    assert not wrong, "\n".join(wrong)


def test_external_imports_follow_the_stages():
    """model/ needs no ASE, matscipy or files; neighbours/ no e3nn; graph tensors torch only."""
    wrong = []
    for imp in ALL_IMPORTS:
        stage = stage_of(imp.source, EXTERNAL_ALLOWED)
        if stage is None or top(imp.target) in ("ase_equi", "__future__") or imp.target == "":
            continue
        if top(imp.target) not in STDLIB and top(imp.target) not in EXTERNAL_ALLOWED[stage]:
            wrong.append(f"{imp} (allowed: {', '.join(EXTERNAL_ALLOWED[stage])}, stdlib)")
    assert not wrong, "\n".join(wrong)


def test_io_never_imports_the_layers_above_it():
    wrong = [
        str(imp)
        for imp in ALL_IMPORTS
        if within(imp.source, ("ase_equi.io",)) and within(imp.target, ABOVE_IO)
    ]
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_cli():
    wrong = [
        str(imp)
        for imp in ALL_IMPORTS
        if within(imp.target, ("ase_equi.cli",)) and not within(imp.source, ("ase_equi.cli",))
    ]
    wrong += [
        f"{path.relative_to(ROOT)} imports ase_equi.cli"
        for folder in ("examples", "benchmarks", "scripts")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if re.search(r"^\s*(from|import)\s+ase_equi\.cli\b", path.read_text(), re.MULTILINE)
    ]
    assert not wrong, "\n".join(wrong)


def test_only_cli_imports_engines():
    """``engines/`` (i-PI, LAMMPS, dispersion) sits on top of the calculator: nothing below it
    names it, so the pipeline never depends on an engine or its optional package."""
    wrong = [
        str(imp)
        for imp in ALL_IMPORTS
        if within(imp.target, ("ase_equi.engines",))
        and not within(imp.source, ("ase_equi.engines", "ase_equi.cli"))
    ]
    assert not wrong, "\n".join(wrong)


def test_argparse_only_in_cli():
    wrong = [
        str(imp)
        for imp in ALL_IMPORTS
        if imp.target == "argparse" and not within(imp.source, ("ase_equi.cli",))
    ]
    assert not wrong, "\n".join(wrong)


def test_no_private_names_imported_across_modules():
    """``from .report import _atomic_write`` couples two modules through a private helper:
    make it public where it belongs. A package may import its own private submodules."""
    wrong = []
    for imp in ALL_IMPORTS:
        if top(imp.target) != "ase_equi":
            continue  # private names of torch or e3nn are their business (and mypy's)
        for n in imp.names:
            private = n.startswith("_") and not n.startswith("__")
            own_submodule = f"{imp.target}.{n}" in MODULES and imp.target == imp.source
            if private and not own_submodule and imp.target != imp.source:
                wrong.append(f"{imp.source} (line {imp.line}) imports {n} from {imp.target}")
    assert not wrong, "\n".join(wrong)


def moved_table() -> dict[str, str]:
    """``ase_equi._moved.MOVED``, read from the source (a dict literal)."""
    for node in ast.walk(parse("ase_equi._moved")):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "MOVED" for t in targets):
                assert node.value is not None
                return ast.literal_eval(node.value)
    raise AssertionError("ase_equi/_moved.py defines no MOVED dict")


def test_moved_table_points_from_gone_modules_to_real_ones():
    moved = moved_table()
    for old, new in moved.items():
        assert old not in MODULES, f"{old} is in MOVED but its module still exists"
        assert new in MODULES, f"MOVED sends {old} to {new}, which is not a module"


def test_nothing_inside_the_package_imports_an_old_path():
    old_paths = tuple(moved_table())
    wrong = [str(imp) for imp in ALL_IMPORTS if old_paths and within(imp.target, old_paths)]
    assert not wrong, "\n".join(wrong)


# == size ========================================================================================


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_length(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name}: {lines} lines > {MAX_MODULE_LINES}: split it"


def body_length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = node.body
    if ast.get_docstring(node) is not None and len(body) > 1:
        body = body[1:]
    return (node.end_lineno or node.lineno) - body[0].lineno + 1


def long_functions(tree: ast.Module) -> list[tuple[str, int, int]]:
    """(name, first line, body length) of functions over the limit without the marker."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node) or ""
            marked = any(line.strip().startswith(LONG_MARKER) for line in docstring.splitlines())
            if body_length(node) > MAX_FUNCTION_LINES and not marked:
                found.append((node.name, node.lineno, body_length(node)))
    return found


def test_function_length_rule_sees_a_long_function_and_the_marker():
    """The checker itself: 61 statement lines fail, unless the docstring says why."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    plain = f'def f():\n    """Doc."""\n{body}\n'
    marked = f'def f():\n    """Doc.\n\n    {LONG_MARKER} it is a table.\n    """\n{body}\n'
    short = 'def f():\n    """Doc."""\n' + "\n".join(body.splitlines()[:-1]) + "\n"
    assert long_functions(ast.parse(plain)) == [("f", 1, MAX_FUNCTION_LINES + 1)]
    assert long_functions(ast.parse(marked)) == []
    assert long_functions(ast.parse(short)) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_function_length(name):
    found = long_functions(parse(name))
    message = [
        f"{name}.{fn} (line {line}): {length} lines > {MAX_FUNCTION_LINES}; split it or add a "
        f'"{LONG_MARKER} ..." line to its docstring'
        for fn, line, length in found
    ]
    assert not found, "\n".join(message)


# == public API ==================================================================================


def public_api() -> list[str]:
    for node in parse("ase_equi").body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError("ase_equi/__init__.py defines no __all__")


def documented_api() -> list[str]:
    """The backquoted names of the list under docs/architecture.md's "## Public API" heading."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("\n## Public API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\s*[-*] `(\w+)`", section, re.MULTILINE)


def test_public_api_is_small_and_documented():
    api = public_api()
    assert len(api) <= MAX_PUBLIC_NAMES, f"{len(api)} public names > {MAX_PUBLIC_NAMES}: {api}"
    assert len(set(api)) == len(api), f"a name is listed twice in __all__: {api}"
    assert sorted(api) == sorted(documented_api()), "docs/architecture.md lists other names"


def test_public_api_imports_are_the_only_names_bound():
    """``ase_equi/__init__.py`` binds the public names (plus ``__version__`` and the finder)."""
    bound = set()
    for node in parse("ase_equi").body:
        if isinstance(node, ast.ImportFrom):
            bound |= {alias.asname or alias.name for alias in node.names}
    assert bound - {"_moved"} == set(public_api())


def test_error_hierarchy_is_documented():
    """Every error class of ``ase_equi/errors.py`` is on the architecture page, with its base."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    for node in parse("ase_equi.errors").body:
        if isinstance(node, ast.ClassDef):
            assert re.search(rf"\b{node.name}\b", text), f"{node.name} missing from {ARCHITECTURE}"


def test_pre_commit_runs_the_checks_ci_runs():
    """The hooks' commands (``entry:``) are lines of ``.ci/run``: one set of checks."""
    hooks = (ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8")
    entries = re.findall(r"^\s*entry:\s*(.+?)\s*$", hooks, re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert entries, "no hooks in .pre-commit-config.yaml"
    for entry in entries:
        assert any(line.strip().startswith(entry) for line in ci), f"CI does not run {entry!r}"


# == old paths ===================================================================================

CHILD = textwrap.dedent(
    """
    import importlib, json, sys, warnings
    moved = json.loads(sys.argv[1])
    problems = []
    for old, new in moved.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                old_module = importlib.import_module(old)
            except Exception as err:
                problems.append(f"import {old}: {type(err).__name__}: {err}")
                continue
        if not any(issubclass(w.category, DeprecationWarning) and new in str(w.message)
                   for w in caught):
            problems.append(f"import {old}: no DeprecationWarning naming {new}")
        new_module = importlib.import_module(new)
        names = [n for n in vars(new_module) if not n.startswith("__")]
        if not names:
            problems.append(f"{new} has no names")
        for n in names:
            if getattr(old_module, n, None) is not getattr(new_module, n):
                problems.append(f"{old}.{n} is not {new}.{n}")
    print("\\n".join(problems))
    """
)


def test_changelog_lists_every_moved_path():
    """CHANGELOG.md's Unreleased section has a row ``| `old` | `new` |`` for each MOVED entry."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    missing = [
        f"{old} -> {new}"
        for old, new in moved_table().items()
        if f"| `{old}` | `{new}` |" not in unreleased
    ]
    assert not missing, "CHANGELOG.md does not list: " + ", ".join(missing)


def test_old_paths_import_with_a_warning_and_the_same_objects():
    moved = moved_table()
    if not moved:
        pytest.skip("no module has moved")
    command = [sys.executable, "-c", CHILD, json.dumps(moved)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "", done.stdout
