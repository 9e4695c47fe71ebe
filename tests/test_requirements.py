"""Every third-party module the project imports is declared: the app's and the package's in requirements.txt,
the tests' and benchmarks' in requirements-dev.txt. A module installed by hand (or pulled in by another
package) would otherwise pass here and crash on a fresh machine — as matplotlib once did."""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL = {"rag", "app", "tests", "benchmarks", "conftest"} | {p.stem for p in (ROOT / "benchmarks").glob("*.py")}


def imported_modules(paths: list[Path]) -> dict[str, str]:
    """Top-level module -> first file importing it, for every absolute import (function-level ones too)."""
    found: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def third_party(modules: dict[str, str]) -> dict[str, str]:
    return {m: f for m, f in modules.items() if m not in sys.stdlib_module_names and m not in LOCAL
            and m != "__future__"}


def requirement_names(path: Path) -> set[str]:
    """Distribution names in a requirements file, following `-r` includes."""
    names: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r"):
            names |= requirement_names(path.parent / line[2:].strip())
        elif line:
            names.add(normalise(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]))
    return names


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def undeclared(modules: dict[str, str], declared: set[str]) -> list[str]:
    distributions = packages_distributions()
    missing = []
    for module, where in sorted(modules.items()):
        owners = {normalise(d) for d in distributions.get(module, [])}
        if not owners:
            missing.append(f"{module} (imported by {where}) is not installed: declare the package providing it")
        elif not owners & declared:
            missing.append(f"{module} (imported by {where}) comes from {sorted(owners)}, which is not declared")
    return missing


def python_files(*parts: str) -> list[Path]:
    files: list[Path] = []
    for part in parts:
        target = ROOT / part
        files += [target] if target.is_file() else sorted(target.rglob("*.py"))
    return files


def test_the_app_and_the_package_import_only_what_requirements_txt_declares():
    modules = third_party(imported_modules(python_files("app.py", "rag")))
    assert {"torch", "gradio", "pymilvus", "matplotlib"} <= modules.keys()  # the scan sees real imports
    assert undeclared(modules, requirement_names(ROOT / "requirements.txt")) == []


def test_tests_and_benchmarks_import_only_what_requirements_dev_txt_declares():
    modules = third_party(imported_modules(python_files("tests", "benchmarks")))
    assert {"pytest", "playwright", "httpx"} <= modules.keys()
    assert undeclared(modules, requirement_names(ROOT / "requirements-dev.txt")) == []


def test_the_scan_flags_an_undeclared_module():
    """The check itself: matplotlib imported by the app but left out of the file is reported."""
    declared = requirement_names(ROOT / "requirements.txt") - {"matplotlib"}
    problems = undeclared({"matplotlib": "rag/ui/plots.py"}, declared)
    assert len(problems) == 1 and "matplotlib" in problems[0] and "not declared" in problems[0]
