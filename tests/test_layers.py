"""The import graph of lib/ is the one docs/ARCHITECTURE.md draws: layers that only point down, no cycle, every lib
import at the top of its module, every module importable on its own (a fresh interpreter)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from lib.paths import REPO_ROOT

LIB = REPO_ROOT / "lib"
ARCHITECTURE = REPO_ROOT / "docs" / "ARCHITECTURE.md"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def lib_imports(node: ast.AST, module: str) -> set[str]:
    """The lib modules an import statement names (``from lib import SAME`` names the package ``lib``)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name == "lib" or a.name.startswith("lib.")}
    if isinstance(node, ast.ImportFrom) and node.module and (node.module == "lib" or node.module.startswith("lib.")):
        return {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names}
    return set()


def graph() -> dict[str, set[str]]:
    """module -> the lib modules it imports, anywhere in it (an import inside a function is an edge too)."""
    edges = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        edges[name] = set().union(*(lib_imports(node, name) for node in ast.walk(tree))) - {name}
    return edges


def layers() -> dict[str, int]:
    """module -> layer, from the table of docs/ARCHITECTURE.md (``| <layer> | <name> | `mod`, `mod` | ... |``)."""
    table = ARCHITECTURE.read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    out = {}
    for row in re.finditer(r"^\|\s*(\d+)\s*\|[^|]*\|([^|]*)\|", table, re.M):
        for module in re.findall(r"`([\w.]+)`", row[2]):
            assert module not in out, f"{module} is in two layers of docs/ARCHITECTURE.md"
            out[module] = int(row[1])
    return out


def test_every_lib_module_has_a_layer_in_the_architecture_doc():
    table = layers()
    assert set(table) == set(MODULES), (f"not in docs/ARCHITECTURE.md: {sorted(set(MODULES) - set(table))}; "
                                        f"no such module: {sorted(set(table) - set(MODULES))}")


def test_imports_point_down_the_layers():
    table = layers()
    up = []
    for module, deps in graph().items():
        for dep in deps:
            siblings = module.rsplit(".", 1)[0] == dep.rsplit(".", 1)[0] != "lib"  # modules of one package
            if table[dep] > table[module] or (table[dep] == table[module] and not siblings):
                up.append(f"{module} (layer {table[module]}) imports {dep} (layer {table[dep]})")
    assert not up, "\n".join(up)


def test_no_import_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(edges[node]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_every_lib_import_is_at_the_top_of_its_module():
    hidden = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if id(node) not in top and lib_imports(node, name):
                hidden.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not hidden, f"lib imports inside functions or blocks: {hidden}"


def test_every_module_imports_on_its_own():
    """Each module as the first lib module of an interpreter (torch and friends stay loaded: only lib is reset)."""
    script = (
        "import importlib, sys\n"
        "import numpy, pandas, torch, torchvision, sklearn.metrics, scipy.stats  # noqa: F401 (loaded once)\n"
        f"for name in {sorted(MODULES)!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'lib' or m.startswith('lib.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
