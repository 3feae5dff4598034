"""The import graph runs one way: each module imports only from its own layer or lower ones.

The layers are ARCHITECTURE.md's table, read from it: the doc and this test are one source.
Every import counts, also the lazy ones inside functions. A new module must be placed in a
layer there, so the doc is where its place is decided.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "include" / "nightshift"
DOC = REPO / "ARCHITECTURE.md"


def _table() -> list[tuple[str, str, str]]:
    """ARCHITECTURE.md's layer table: (layer, modules cell, room-for cell) per row."""
    lines = DOC.read_text().splitlines()
    start = lines.index("| layer | modules | the room for |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        _, layer, modules, room, _ = line.split("|")
        rows.append((layer.strip(), modules, room))
    return rows


def _placed(cell: str) -> set[str]:
    """The layer keys a modules cell names: `module` or `folder/` (names with a dot, such as
    `dags/nightshift_pipelines.py`, are outside the package)."""
    return {name.rstrip("/") for name in re.findall(r"`([^`]+)`", cell) if "." not in name}


LAYERS = [(layer, _placed(modules)) for layer, modules, _ in _table()]
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
    source = tmp_path / "storage" / "lake.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from nightshift.night.stages import run_nightly\n")
    assert _imports(source) == {"night"}
    assert LAYER["night"] > LAYER["storage"]


def test_every_module_of_a_layers_folder_is_described() -> None:
    missing = []
    for _, modules, room in _table():
        for folder in re.findall(r"`([a-z_]+)/`", modules):
            for child in sorted((PACKAGE / folder).iterdir()):
                name = child.stem if child.suffix == ".py" else child.name
                described = f"`{folder}.{name}`" in room or f"`{folder}.{name}`" in modules
                if name not in ("__init__", "__pycache__") and not described:
                    missing.append(f"{folder}.{name}")
    assert not missing, f"describe these in ARCHITECTURE.md's layer table: {missing}"


def test_every_layer_is_a_folder_and_only_the_entry_points_sit_at_the_top() -> None:
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    [(_, outermost)] = LAYERS[-1:]
    assert set(top) == outermost, f"{top}: a module at the top of the package is an entry point"
    folders = [modules for _, modules in LAYERS[:-1]]
    assert all(len(m) == 1 and (PACKAGE / next(iter(m))).is_dir() for m in folders), folders
