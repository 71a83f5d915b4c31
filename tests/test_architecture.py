"""The code's own rules: imports point down the layers, no import cycles, no function over 100 lines."""

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"
LAYERS = ["theory", "lm", "methods", "pipeline", "report", "cli"]  # each may import only from those before it
BESIDE = {"integrations": "report"}  # the trainer callbacks fit frontiers (pipeline): they rank with report
SHARED = {"errors", "seeding", "samples", "__main__"}  # below every layer (samples: the sample-table reader)


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        out[name] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """Every alignlimits module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alignlimits"):
            found |= {t for t in [node.module] + [f"{node.module}.{a.name}" for a in node.names] if t in known}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
    return found


def layer(module: str) -> int | None:
    part = module.split(".")[1] if "." in module else ""
    part = BESIDE.get(part, part)
    return LAYERS.index(part) if part in LAYERS else None


def test_imports_point_down():
    mods = modules()
    wrong = []
    for name, path in mods.items():
        here = layer(name)
        for target in imports(path, set(mods)):
            there = layer(target)
            if here is not None and there is not None and there > here:
                wrong.append(f"{name} imports {target}")
            if here is None and name.split(".")[-1] in SHARED and there is not None and name != "alignlimits.__main__":
                wrong.append(f"{name} (shared) imports {target}")
    assert not wrong, wrong


def test_no_import_cycles():
    mods = modules()
    edges = {m: {t for t in imports(p, set(mods)) if t.count(".") >= 2 and t != m} for m, p in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in mods:
        if m not in state:
            visit(m, [])
    assert not cycles, cycles


def test_functions_a_reader_can_hold():
    long = [f"{path.relative_to(SRC)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in SRC.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 100]
    assert not long, long
