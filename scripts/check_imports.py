"""Check hamflow's import graph: no circle, and no import from a lower layer to a higher one.

Walks the ``ast`` of every module under ``src/hamflow`` (module-level and function-level imports
alike) and prints each violation on one line; exit status 1 when there is any.

Layers, lowest first (a module may import only its own layer or lower ones):
errors/atomic -> data -> graph -> config, nn -> train -> infer -> cli

    python3 scripts/check_imports.py [SRC_DIR]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS = {
    "hamflow.errors": 0,
    "hamflow.atomic": 0,
    "hamflow.data": 1,
    "hamflow.graph": 2,
    "hamflow.config": 3,
    "hamflow.nn": 3,
    "hamflow.train": 4,
    "hamflow.workflow_support": 6,
    "hamflow.infer": 5,
    "hamflow.cli": 6,
    "hamflow.cli_data": 6,
    "hamflow.__main__": 6,
    "hamflow": 0,
}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(module)


def module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        for name in names:
            if not name.startswith("hamflow"):
                continue
            # the longest known module prefix of the name
            parts = name.split(".")
            for n in range(len(parts), 0, -1):
                cand = ".".join(parts[:n])
                if cand in known:
                    if cand != module:
                        found.add(cand)
                    break
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "src"
    files = sorted((src / "hamflow").rglob("*.py"))
    modules = {module_name(p, src): p for p in files}
    known = set(modules)
    graph = {m: imports_of(p, m, known) for m, p in modules.items()}
    problems = 0
    # a package's __init__ importing its own submodules is not a circle worth reporting
    pkg_graph = {
        m: {t for t in targets if not (modules[m].name == "__init__.py" and t.startswith(m + "."))}
        for m, targets in graph.items()
    }
    # submodules importing their package __init__ count as importing the package
    for comp in find_cycles(pkg_graph):
        print("import circle: " + " <-> ".join(comp))
        problems += 1
    for m, targets in sorted(graph.items()):
        for t in sorted(targets):
            if layer_of(t) > layer_of(m):
                print(f"layer violation: {m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})")
                problems += 1
    edges = sum(len(t) for t in graph.values())
    print(f"{len(modules)} modules, {edges} imports: {problems} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
