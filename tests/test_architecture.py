"""The layers of docs/architecture.md, enforced: an import that crosses a layer upward fails here.

Every import statement of the package (top level and inside functions, since a lazy import is still a
dependency) is read with `ast`; no module is executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Folder in the repository -> the import name it installs as (pyproject.toml's package-dir).
SOURCES = {
    "transfertraj": "transfertraj",
    "jobs": "transfertraj.jobs",
    "model": "transfertraj.model",
    "feature_store": "transfertraj.feature_store",
    "config/cities": "transfertraj.cities",
    "dags": "dags",
}

# Layer of a module, by the longest matching prefix; a module may import its own layer and those below.
# jobs and model share a floor but are separate rooms: neither imports the other.
LAYERS = {
    "transfertraj.core": 0,
    "transfertraj.cities": 0,
    "transfertraj.feature_store": 1,
    "transfertraj.features": 1,  # per-point feature functions in numpy, shared by Spark jobs and serving
    "transfertraj.jobs": 2,
    "transfertraj.model": 2,
    "transfertraj": 3,  # the shell: cli, demo, tasks, registry, serving
    "dags": 4,
}
ROOMS = {"transfertraj.jobs", "transfertraj.model"}


def layer_of(module: str) -> tuple[int, str]:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix], prefix
    raise KeyError(module)


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in SOURCES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def project_imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a project module in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level] if not path.name == "__init__.py" else module.split(".")
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in ("transfertraj", "dags", "jobs", "model", "feature_store"):
                found.append((node.lineno, name))
    return found


def test_the_package_is_one_namespace():
    """`import model` or `import jobs` would collide with an application's own packages."""
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for module, path in modules().items()
        for line, name in project_imports(path, module)
        if name.split(".")[0] in ("jobs", "model", "feature_store")
    ]
    assert not bad, "\n".join(bad)


def test_no_import_crosses_a_layer_upward():
    problems = []
    for module, path in modules().items():
        mine, my_prefix = layer_of(module)
        for line, name in project_imports(path, module):
            if name.split(".")[0] != "transfertraj":
                continue
            theirs, their_prefix = layer_of(name)
            upward = theirs > mine
            sideways = my_prefix in ROOMS and their_prefix in ROOMS and my_prefix != their_prefix
            if upward or sideways:
                problems.append(
                    f"{path.relative_to(REPO)}:{line}: {module} (layer {mine}) imports {name} (layer {theirs})"
                )
    assert not problems, "imports across layers (see docs/architecture.md):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "layer"),
    [("transfertraj.core.settings", 0), ("transfertraj.jobs.ingest", 2), ("transfertraj.cli", 3), ("dags.pretrain", 4)],
)
def test_layer_map(module, layer):
    assert layer_of(module)[0] == layer


def test_the_check_sees_a_crossing(tmp_path):
    """The check above can fail: a core module importing the model is reported."""
    f = tmp_path / "bad.py"
    f.write_text("def f():\n    from transfertraj.model.train import fit\n")
    ((line, name),) = project_imports(f, "transfertraj.core.bad")
    assert layer_of(name)[0] > layer_of("transfertraj.core.bad")[0] and line == 2
