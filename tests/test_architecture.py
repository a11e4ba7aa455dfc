"""The package's rooms: imports run one way, and the learner reaches the data side only through ``RolloutSource``."""

from __future__ import annotations

import ast
import re

from .conftest import ROOT

PACKAGE = ROOT / "impala_lit"


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, known: set[str]) -> set[str]:
    """Modules of impala_lit that ``path`` imports, also inside functions (a lazy import still ties two modules)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("impala_lit"):
            for alias in node.names:  # ``from impala_lit.envs import pomdp`` imports the module pomdp
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("impala_lit"))
    return found


def test_no_import_circle_between_modules() -> None:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports_of(path, set(paths)) for name, path in paths.items()}
    # a package's __init__ only re-exports: an import of ``impala_lit.envs`` is an import of its modules
    modules = {name for name, path in paths.items() if path.name != "__init__.py"}

    def targets(name: str) -> set[str]:
        if name in modules:
            return {name}
        return {t for dep in graph.get(name, ()) for t in targets(dep)} if name != "impala_lit" else set()

    edges = {m: {t for dep in graph[m] for t in targets(dep)} - {m} for m in modules}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges[node]:
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [])


def test_the_learner_and_evaluation_touch_the_data_module_only_through_rollout_source() -> None:
    for path in [PACKAGE / "learning" / "learner.py", PACKAGE / "learning" / "appo.py", PACKAGE / "app/evaluation.py"]:
        text = path.read_text()
        uses = re.findall(r"datamodule(?:\.\w+)?", text)
        assert set(uses) <= {"datamodule"}, f"{path.name} reads {sorted(set(uses) - {'datamodule'})}"
        assert "getattr(" not in text and "hasattr(" not in text, path.name


def test_every_public_name_resolves() -> None:
    import impala_lit

    for name in impala_lit.__all__:
        assert getattr(impala_lit, name).__name__ == name


def test_the_actor_side_imports_neither_lightning_nor_mlflow() -> None:
    """Spawned actors import what they unpickle; Lightning and MLflow would cost each one seconds."""
    import subprocess
    import sys

    code = (
        "import sys, impala_lit, impala_lit.actors.stream, impala_lit.envs, impala_lit.agent.networks\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'mlflow', 'torchmetrics'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
