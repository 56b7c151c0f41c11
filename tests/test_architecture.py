"""The layout's rules, read off the source: no import cycle, Ray only in the layers that run on it, short modules."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "raypipe"
# Where Ray lives: the executor (and the connection it runs on), the Serve applications, the Ray Train driver and
# worker, the engine backends that are Ray by nature (ray.data.llm, Serve LLM) and the commands. Everything else,
# the core and every job package's logic above all, is plain Python on Arrow: jobs reach Ray through the executor.
RAY_LAYERS = ("raypipe.executor", "raypipe.ray_env", "raypipe.online.app", "raypipe.eval.hosting",
              "raypipe.train.run", "raypipe.train.worker", "raypipe.train.data", "raypipe.eval.backends.vllm",
              "raypipe.diagnostics.judge_vllm", "raypipe.commands")
MAX_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, name: str) -> set[str]:
    """Every module this file imports, at the top or inside functions; `if TYPE_CHECKING:` blocks aside."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports(path, name) if m in mods and m != name} for name, path in mods.items()}


def test_no_import_cycle():
    edges = graph()
    # a package importing one of its own modules is how Python loads it; a module importing its package is not a
    # cycle unless the package imports it back, which the graph shows
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt in stack and node.startswith(nxt + "."):
                continue  # a module reading its own package's __init__ (which does not import it back)
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_ray_is_imported_only_where_jobs_run_on_it():
    offenders = {}
    for name, path in modules().items():
        ray_imports = sorted(m for m in imports(path, name) if m == "ray" or m.startswith("ray."))
        if ray_imports and not name.startswith(RAY_LAYERS):
            offenders[name] = ray_imports
    assert not offenders, offenders
    core = [n for n in modules() if n.startswith("raypipe.core")]
    assert len(core) > 10  # the rule above covers the whole core


def test_modules_stay_short():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long
