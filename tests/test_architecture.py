"""The package's shape, enforced: imports flow one way down the pipeline, there is no import circle, and
``docs/architecture.md`` lists exactly the modules that exist.

The pipeline's layers, left to right: data → models → losses → training → evaluation → experiments →
report → api → cli. A module may import its own layer, the layers to its left and the shared top-level modules
(:data:`SHARED`); a shared module imports only shared modules. Every ``import`` counts, including those
inside functions: a lazy import that keeps a circle alive is still a circle.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "learner"
ARCHITECTURE_DOC = SOURCE.parents[1] / "docs" / "architecture.md"

LAYERS: tuple[str, ...] = (
    "data", "models", "losses", "training", "evaluation", "experiments", "report", "api", "cli", "__main__"
)  # fmt: skip
SHARED: tuple[str, ...] = (
    "errors", "atomic", "console", "formats", "config", "config_reference", "environment", "layout", "runs",
    "timing",
)  # fmt: skip


def module_name(path: Path) -> str:
    """``src/learner/data/manifest.py`` → ``learner.data.manifest``; a package is its ``__init__``."""
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every ``learner`` module that ``path`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]  # `from learner.x import f` names module learner.x
            if target and target != "learner" and target != name:
                yield target


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: set(imported_modules(name, path, set(found))) for name, path in found.items()}


def layer_of(module: str) -> tuple[str, int | None]:
    """(top-level name, layer index or None for a shared module)."""
    top = module.split(".")[1]
    if top in SHARED:
        return top, None
    if top not in LAYERS:
        raise AssertionError(f"{module}: {top!r} is neither a pipeline layer nor a shared module")
    return top, LAYERS.index(top)


def test_every_top_level_name_is_a_layer_or_shared() -> None:
    for module in modules():
        if module != "learner":
            layer_of(module)


def test_imports_never_point_back_up_the_pipeline() -> None:
    backwards = []
    for source, targets in import_graph().items():
        if source == "learner":
            assert not targets, f"learner/__init__.py must stay import-free, imports {sorted(targets)}"
            continue
        _, here = layer_of(source)
        for target in targets:
            _, there = layer_of(target)
            if there is None:
                continue
            if here is None or there > here:
                backwards.append(f"{source} → {target}")
    assert not backwards, "imports against the pipeline order:\n" + "\n".join(sorted(backwards))


PHANTOM_MAKERS: tuple[str, ...] = ("learner.experiments.demo", "learner.api", "learner.cli.phantom_cmd")
"""The modules above ``data/`` that generate phantom cohorts; everything else learns what it needs about a
phantom (its record, the latent truth) as data, through ``learner.data.provenance``."""


def test_nothing_above_data_imports_the_phantom_generators() -> None:
    leaks = [
        f"{source} → {target}"
        for source, targets in import_graph().items()
        if not source.startswith("learner.data") and source not in PHANTOM_MAKERS
        for target in targets
        if target.startswith("learner.data.phantom")
    ]
    assert not leaks, "phantom imports above data/ (use learner.data.provenance):\n" + "\n".join(
        sorted(leaks)
    )


def test_no_import_circle() -> None:
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_a_backward_and_a_lazy_import(tmp_path: Path) -> None:
    """The checker itself can fail: a function-level import from a later layer is reported."""
    code = "def f():\n    from learner.experiments.table3 import run_table3\n    return run_table3\n"
    fake = SOURCE / "models" / "x.py"
    (tmp_path / "x.py").write_text(code)
    known = {"learner.models.x", "learner.experiments.table3", "learner.experiments"}
    found = set(imported_modules("learner.models.x", tmp_path / "x.py", known))
    assert found == {"learner.experiments.table3"}
    assert layer_of("learner.experiments.table3")[1] > layer_of(module_name(fake))[1]  # type: ignore[operator]


DOC_MODULE = re.compile(r"^\| [a-z]+ \| `((?:[a-z_]+/)*[a-z_0-9]+\.py)` \|", re.MULTILINE)


def test_architecture_doc_lists_exactly_the_modules() -> None:
    """The module table of ``docs/architecture.md`` (``| layer | `path` | holds |``, paths relative to
    ``src/learner``) lists every module once and nothing else, each under its real layer."""
    documented = set(DOC_MODULE.findall(ARCHITECTURE_DOC.read_text(encoding="utf-8")))
    actual = {str(path.relative_to(SOURCE)) for path in SOURCE.rglob("*.py") if path.name != "__init__.py"}
    assert sorted(actual - documented) == [], "modules missing from docs/architecture.md"
    assert sorted(documented - actual) == [], "docs/architecture.md names modules that do not exist"
    for layer, path in re.findall(r"^\| ([a-z]+) \| `([^`]+)`", ARCHITECTURE_DOC.read_text(), re.MULTILINE):
        top = path.split("/")[0].removesuffix(".py")
        assert layer == ("shared" if top in SHARED else "cli" if top == "__main__" else top), path


LAYOUT_NAME = re.compile(
    r'/ "(checkpoints|embeddings|pairs|classifier|encoder)"|'
    r'"(config\.yaml|run\.json|log\.txt|metrics\.json|metrics\.csv|results\.json|splits\.csv|complete\.json)"'
)


def test_only_the_run_layout_names_a_run_directorys_files() -> None:
    """No module but ``layout.py`` builds a path to a run directory's files or folders by hand (one owner:
    a name changed there changes everywhere, and no reader looks in the wrong folder)."""
    hand_built = [
        f"{path.relative_to(SOURCE)}:{number}: {line.strip()}"
        for path in sorted(SOURCE.rglob("*.py"))
        if path.name != "layout.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if LAYOUT_NAME.search(line)
    ]
    assert hand_built == []


LINE_LIMIT = 400


def reviewed_long_modules() -> dict[str, str]:
    """The table of docs/architecture.md's "Modules over 400 lines": module path → its reviewed reason."""
    text = ARCHITECTURE_DOC.read_text(encoding="utf-8").split("## Modules over 400 lines", 1)[1]
    section = text.split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([^`]+\.py)` \| (.+?) \|$", section, re.MULTILINE))


def test_modules_over_the_line_limit_are_the_reviewed_exceptions() -> None:
    """A module over :data:`LINE_LIMIT` lines is listed with a reason in docs/architecture.md, and every
    listed module is still over it."""
    long = {
        str(path.relative_to(SOURCE))
        for path in SOURCE.rglob("*.py")
        if path.read_text(encoding="utf-8").count("\n") > LINE_LIMIT
    }
    reviewed = reviewed_long_modules()
    assert all(len(reason) > 20 for reason in reviewed.values()), reviewed
    assert sorted(long - set(reviewed)) == [], f"over {LINE_LIMIT} lines without a reviewed reason"
    assert sorted(set(reviewed) - long) == [], f"listed as over {LINE_LIMIT} lines but no longer are"
