"""The package's layering (docs/architecture.md), checked by reading every module's imports with ``ast``.

Each module of ``uncerda_core`` sits on one layer; it may import its own layer and the layers below,
never one above, whether the import is at module level or inside a function (a lazy import is still a
dependency). On top of the layers: nothing imports the CLI (any module of the package ``cli/``) but
``__main__``; nothing outside ``train/`` (and the CLI that runs it) imports the trainer; the pure modules import neither I/O helpers nor I/O
libraries; and no two modules import each other, directly or round a circle (lazy imports included).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "uncerda_core"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Bottom first. Names are relative to the package ("" is uncerda_core/__init__.py); a name stands for the
# module and, when it is a package, everything below it; the longest name that matches a module decides.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pure", ("", "errors", "stages", "data.labels", "uncertainty.codes", "uncertainty.equations", "evaluate.metrics",
              "pseudo.gmm")),
    ("files", ("artifacts", "schema")),
    ("data and models", ("data", "models")),
    ("config and runtime", ("config", "runtime")),
    ("stages", ("inference", "uncertainty", "pseudo", "evaluate")),
    ("training and applications", ("train", "predict", "export", "report")),
    ("command registry", ("cli.registry",)),
    ("cli", ("cli",)),
    ("entry point", ("__main__",)),
)
PURE = LAYERS[0][1]
# Libraries a pure module may import: numpy and the standard library less what reads or writes files.
PURE_THIRD_PARTY = {"numpy"}
IO_STDLIB = {"os", "io", "pathlib", "shutil", "tempfile", "subprocess", "pickle", "json", "csv", "glob",
             "socket", "sqlite3", "zipfile", "tarfile", "multiprocessing", "concurrent"}
# Import circles tolerated for now, each a frozenset of module names with the issue that removes it.
# Empty since issue #15's first step broke up cli <-> report.commands (module level; the command line is now
# the package cli/, whose report commands live in cli/report.py) and
# uncertainty.histogram <-> maps (closed by a lazy import); a NEW circle fails the test.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


@dataclass(frozen=True)
class Import:
    source: str      # importing module, relative to the package
    target: str      # imported module (or the package root ""), relative to the package
    line: int
    lazy: bool       # inside a function: runs at call time, not at import time
    internal: bool   # within the package; else ``target`` is "" and ``top`` names the library
    top: str = ""    # first component of an outside name (for the pure modules' check)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by name relative to the package."""
    return {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of ``name`` (relative) that is a module; "" for the package root."""
    parts = name.split(".") if name else []
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts)


def module_imports(name: str, path: Path, modules: dict[str, Path], package: str = PACKAGE) -> list[Import]:
    """All imports of one module: within the package resolved to module names, others by top-level name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def add(absolute: str, line: int, lazy: bool, names: Iterable[str] = ()) -> None:
        if absolute != package and not absolute.startswith(package + "."):
            found.append(Import(name, "", line, lazy, internal=False, top=absolute.split(".")[0]))
            return
        relative = absolute[len(package) + 1:] if absolute != package else ""
        targets = set()
        for item in names or [None]:
            full = f"{relative}.{item}" if relative and item else (item or relative)
            targets.add(full if item and full in modules else _resolve(relative, modules))
        found.extend(Import(name, t, line, lazy, internal=True) for t in sorted(targets))

    def walk(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child.lineno, lazy)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = [package, *name.split(".")] if name else [package]
                    base = base[:len(base) - child.level + (1 if is_package else 0)]
                    absolute = ".".join(base + ([child.module] if child.module else []))
                else:
                    absolute = child.module or ""
                add(absolute, child.lineno, lazy, [a.name for a in child.names])
            walk(child, inner)

    walk(tree, False)
    return found


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, list[Import]]:
    modules = package_modules(root)
    return {name: module_imports(name, path, modules, package) for name, path in modules.items()}


def layer_of(module: str, layers=LAYERS) -> int | None:
    best, best_len = None, -1
    for level, (_, names) in enumerate(layers):
        for n in names:
            if (module == n or (n and module.startswith(n + "."))) and len(n) > best_len:
                best, best_len = level, len(n)
    return best


def upward_imports(graph: dict[str, list[Import]], layers=LAYERS) -> list[str]:
    """Every import of a module from a layer above its own (lazy ones included)."""
    problems = []
    for imports in graph.values():
        for imp in imports:
            if not imp.internal or imp.target == imp.source:
                continue
            src, dst = layer_of(imp.source, layers), layer_of(imp.target, layers)
            if dst is not None and src is not None and dst > src:
                problems.append(f"{imp.source}:{imp.line} imports {imp.target or PACKAGE}"
                                f"{' (inside a function)' if imp.lazy else ''}: layer '{layers[dst][0]}' is above "
                                f"'{layers[src][0]}'")
    return problems


def import_cycles(graph: dict[str, list[Import]], lazy: bool) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (or a module importing itself).

    ``lazy``: count imports inside functions too (a circle closed by a lazy import is hidden from the import
    machinery, not gone: the two modules still cannot be understood or moved apart).
    """
    edges = {m: sorted({i.target for i in imps if i.internal and (lazy or not i.lazy) and i.target in graph})
             for m, imps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:   # Tarjan; the package has ~60 modules, recursion depth is no concern
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                found.append(frozenset(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    return import_graph(PACKAGE_ROOT)


def test_every_module_has_a_layer(graph):
    missing = sorted(m for m in graph if layer_of(m) is None)
    assert not missing, ("give these modules a layer in LAYERS (tests/test_layers.py) and in "
                         f"docs/architecture.md: {missing}")


def test_no_import_runs_up_the_layers(graph):
    assert not upward_imports(graph), "\n".join(upward_imports(graph))


def in_cli(module: str) -> bool:
    """The command-line package ``cli/`` (its ``__init__`` is "cli", its modules "cli.<name>")."""
    return module == "cli" or module.startswith("cli.")


def cli_importers(graph: dict[str, list[Import]]) -> list[str]:
    """Imports of the command line (any module of ``cli/``) from outside it, other than ``__main__``'s."""
    return [f"{i.source}:{i.line} imports {i.target}" for imps in graph.values() for i in imps
            if i.internal and in_cli(i.target) and not in_cli(i.source) and i.source != "__main__"]


def test_only_main_imports_the_cli(graph):
    bad = cli_importers(graph)
    assert not bad, f"nothing below the command line (uncerda_core.cli) may import it: {bad}"


def test_the_cli_check_covers_the_whole_package():
    """An import of any module of cli/ (the registry, the report commands) counts, lazy or not; the cli's
    own modules and __main__ may import it."""
    def imp(source, target, lazy=False):
        return Import(source, target, 1, lazy, internal=True)
    graph = {"report.tables": [imp("report.tables", "cli.registry")],
             "pseudo.labels": [imp("pseudo.labels", "cli.report", lazy=True)],
             "data": [imp("data", "cli")],
             "cli": [imp("cli", "cli.stages")], "cli.stages": [imp("cli.stages", "cli.registry")],
             "__main__": [imp("__main__", "cli")], "client": [imp("client", "runtime")]}
    assert cli_importers(graph) == ["report.tables:1 imports cli.registry", "pseudo.labels:1 imports cli.report",
                                    "data:1 imports cli"]
    assert not in_cli("client") and layer_of("cli.registry") < layer_of("cli.report") == layer_of("cli")


def test_nothing_outside_training_imports_the_trainer(graph):
    bad = [f"{i.source}:{i.line} imports {i.target}" for imps in graph.values() for i in imps
           if i.internal and (i.target == "train" or i.target.startswith("train."))
           and not (i.source == "train" or i.source.startswith("train.")) and not in_cli(i.source)
           and i.source != "__main__"]
    assert not bad, f"device, seeding and checkpoint loading live in uncerda_core.runtime: {bad}"


def test_pure_modules_import_no_io(graph):
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = []
    for module in graph:
        if layer_of(module) != 0:
            continue
        for i in graph[module]:
            if i.internal:
                if layer_of(i.target) != 0:
                    bad.append(f"{module}:{i.line} imports {i.target or PACKAGE}")
            elif i.top in IO_STDLIB or (i.top not in stdlib and i.top not in PURE_THIRD_PARTY):
                bad.append(f"{module}:{i.line} imports {i.top}")
    assert not bad, f"pure modules ({', '.join(p for p in PURE if p)}) import only each other and numpy: {bad}"


def test_no_import_cycles(graph):
    cycles = set(import_cycles(graph, lazy=True))
    new = [sorted(c) for c in cycles - KNOWN_CYCLES]
    assert not new, f"module-level import circles: {new}"
    gone = [sorted(c) for c in KNOWN_CYCLES - cycles]
    assert not gone, f"remove these from KNOWN_CYCLES, they are gone: {gone}"


def test_the_checks_find_what_they_look_for(tmp_path):
    """A small made-up package with one of each fault: every check above must report it."""
    root = tmp_path / "fake"
    files = {
        "__init__.py": "",
        "low.py": "def f():\n    from fake import high\n",               # lazy import of a higher layer
        "high.py": "from . import low\nimport fake.a\n",
        "a.py": "from fake.b import thing\n",                              # a <-> b at module level
        "b.py": "import fake.a\nthing = 1\n",
        "pkg/__init__.py": "from .. import low\n",                          # relative import from a package
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    g = import_graph(root, package="fake")
    assert {(i.source, i.target, i.lazy) for imps in g.values() for i in imps} == {
        ("low", "high", True), ("high", "low", False), ("high", "a", False), ("a", "b", False), ("b", "a", False),
        ("pkg", "low", False)}
    layers = (("bottom", ("", "low", "a", "b", "pkg")), ("top", ("high",)))
    up = upward_imports(g, layers)
    assert up == ["low:2 imports high (inside a function): layer 'top' is above 'bottom'"]
    assert import_cycles(g, lazy=False) == [frozenset({"a", "b"})]
    assert set(import_cycles(g, lazy=True)) == {frozenset({"a", "b"}), frozenset({"low", "high"})}
    assert layer_of("a_new_module") is None                # a module nobody placed fails the first test
    assert layer_of("data.new_reader") == 2 and layer_of("data.labels") == 0   # the longest name decides


# --- the workflow: rule files hold rules, their helpers live in common.smk ---------------------------

RULES_DIR = PACKAGE_ROOT.parent / "workflow" / "rules"
# What a rule file may hold at its top level besides comments and blank lines: rules (and checkpoints, and a
# rule derived from another with `use rule`), and the one conditional that declares the demo's rule only when
# the demo is enabled.
RULE_FILE_STATEMENT = ("rule ", "checkpoint ", "use rule ", "if config[")


def non_rule_statements(text: str) -> list[str]:
    """Top-level lines of a rule file that are neither a rule, a comment nor a continuation."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line[0] in " \t#)]}\"'":
            continue
        if not line.startswith(RULE_FILE_STATEMENT):
            found.append(f"{number}: {line}")
    return found


@pytest.mark.parametrize("rule_file", sorted(p.name for p in RULES_DIR.glob("*.smk") if p.name != "common.smk"))
def test_rule_files_hold_rules_only(rule_file):
    """Imports, constants and functions go to common.smk, so no rule file relies on another's."""
    assert non_rule_statements((RULES_DIR / rule_file).read_text()) == []


def test_the_rule_file_check_finds_helpers():
    text = ("# a comment\nimport os\n\nX = 1\n\n\ndef helper(w):\n    return 1\n\n\nrule a:\n    input:\n"
            "        'x',\n\n\nif config['demo']['enabled']:\n\n    rule b:\n        output: 'y'\n")
    assert non_rule_statements(text) == ["2: import os", "4: X = 1", "7: def helper(w):"]
    assert non_rule_statements("use rule a as b with:\n    output: 'z'\n") == []


# --- the entry points: the console script and ``python -m uncerda_core`` reach the CLI package's main -------

def test_entry_points_reach_the_cli(capsys):
    import importlib
    import subprocess
    import tomllib
    target = tomllib.loads((PACKAGE_ROOT.parent / "pyproject.toml").read_text())["project"]["scripts"]["uncerda"]
    module, _, name = target.partition(":")
    main = getattr(importlib.import_module(module), name)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "figure-iou" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-m", PACKAGE, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "pseudo-labels" in proc.stdout and "table-html" in proc.stdout
