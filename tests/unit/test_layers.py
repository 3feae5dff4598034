"""The import graph runs one way: each module imports only from its own layer or lower ones.

The layers are ARCHITECTURE.md's; every import counts, also the lazy ones inside functions.
A new module must be placed in a layer here, so this test is where its place is decided.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "include" / "nightshift"
LAYERS = [
    ("configuration", {"config", "records", "expressions", "progress", "profiling", "run_date"}),
    ("storage", {"lake", "quarantine"}),
    ("data stages", {"generator", "ingest", "validate", "preprocess", "features"}),
    (
        "models",
        {
            "train",
            "kinds",
            "xgboost_batches",
            "sgd_workers",
            "safe_models",
            "cluster",
            "cluster_host",
        },
    ),
    ("evaluation", {"evaluate", "champion"}),
    ("publishing", {"tracking", "report", "report_index", "alerts"}),
    ("the night", {"stages"}),
    ("orchestration", {"airflow_dag", "access", "cli", "starter", "ops"}),
]
LAYER = {module: index for index, (_, modules) in enumerate(LAYERS) for module in modules}


def _module(path: Path) -> str:
    """The layer key of a file: its module name, or ``ops`` for the ops subpackage."""
    relative = path.relative_to(PACKAGE).with_suffix("")
    return relative.parts[0]


def _imports(path: Path) -> set[str]:
    """The nightshift modules ``path`` imports (first name below ``nightshift``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "nightshift":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from nightshift import tracking, __version__
                found.update(alias.name for alias in node.names if alias.name in LAYER)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "nightshift" and len(parts) > 1:
                    found.add(parts[1])
    return found


def _sources() -> list[Path]:
    return [
        p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py" or p.parent != PACKAGE
    ]


def test_every_module_has_a_layer() -> None:
    unplaced = sorted({_module(p) for p in _sources()} - set(LAYER))
    assert not unplaced, f"place these modules in a layer of tests/unit/test_layers.py: {unplaced}"


def test_no_import_runs_backwards() -> None:
    backwards = []
    for path in _sources():
        importer = _module(path)
        for imported in _imports(path) - {importer}:
            if LAYER[imported] > LAYER[importer]:
                backwards.append(
                    f"{path.relative_to(PACKAGE)} ({LAYERS[LAYER[importer]][0]}) imports "
                    f"{imported} ({LAYERS[LAYER[imported]][0]})"
                )
    assert not backwards, "\n".join(backwards)


def test_the_check_sees_a_backward_import(tmp_path: Path) -> None:
    source = tmp_path / "lake.py"
    source.write_text("def f():\n    from nightshift.stages import run_nightly\n")
    assert _imports(source) == {"stages"}
    assert LAYER["stages"] > LAYER["lake"]
