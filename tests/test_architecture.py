"""The package's shape: no import cycles (function-level imports count too), lower layers never import the
layers above them, and importing the package stays cheap."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rag"

# Each layer may import itself and the layers listed before it, never one after it.
LAYERS = [
    {"rag.errors", "rag.types"},
    {"rag.settings"},
    {"rag.models", "rag.store", "rag.answer"},
    {"rag.ingest"},
    {"rag.pipeline"},
    {"rag.chat", "rag.knowledge_base", "rag.eval", "rag.commands", "rag.warmup"},
    {"rag.cli", "rag.ui", "rag.__main__", "rag"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path: Path) -> set[str]:
    """Every rag.* module this file imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package uses absolute rag.* imports")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rag":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from rag.x import module`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "rag")
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in internal_imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def layer_of(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if module in layer or any(module.startswith(top + ".") for top in layer if top != "rag"):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, stack + [nxt])
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert cycles == []


def test_lower_layers_never_import_higher_ones():
    wrong = [f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
             if layer_of(target) > layer_of(module) and not module.startswith(target + ".")]
    assert wrong == []


def test_importing_the_package_loads_no_model_library():
    """`from rag import RAG, Settings` is cheap: torch, transformers, gradio load only when used."""
    code = ("import sys; from rag import RAG, Settings; "
            "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers', 'gradio', 'pymilvus') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
