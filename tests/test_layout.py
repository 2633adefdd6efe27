"""The package's layout rules, checked on the source: no import cycle (imports inside functions count), the
pipeline's arrows (docs/architecture.md), no stage that reads the task type, no public name that hides a module,
and no benchmark script that imports another."""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "hfcompress" / "pipeline"


def module_imports(root: Path, package: str | None) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports, anywhere in its file (a function-level import that
    dodges a cycle at load time still ties the two). ``package``: the tree's package name; None: a folder of
    scripts that import each other by bare name."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(([package] if package else []) + parts)] = path
    edges = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            found = []
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                found = [module] + [f"{module}.{alias.name}" for alias in node.names]
            for target in found:
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name and not name.startswith(target + "."):
                    targets.add(target)
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from .b import x\n")
    (tmp_path / "pkg" / "b.py").write_text("def x():\n    from . import a\n")
    (tmp_path / "pkg" / "c.py").write_text("from .a import x\n")
    assert cycles(module_imports(tmp_path / "pkg", "pkg")) == [["pkg.a", "pkg.b"]]


@pytest.mark.parametrize("folder,package", [("hfcompress", "hfcompress"), ("scripts", None)])
def test_no_import_cycles(folder, package):
    assert cycles(module_imports(ROOT / folder, package)) == []


def test_no_benchmark_script_imports_another():
    edges = module_imports(ROOT / "scripts", None)
    benches = [name for name in edges if name.startswith("bench_")]
    assert benches, "no bench_*.py under scripts/"
    assert {name: sorted(t for t in edges[name] if t.startswith("bench_")) for name in benches} == {
        name: [] for name in benches
    }


def pipeline_edges() -> dict[str, set[str]]:
    edges = module_imports(PIPELINE, "hfcompress.pipeline")
    return {k: {t for t in v if t.startswith("hfcompress.pipeline")} for k, v in edges.items()}


def test_the_pipeline_arrows_point_down():
    """spec.py imports nothing else in pipeline/; tasks/ and the search algorithm know no stage and no config
    loader; only config.py and run.py import the registry; stages never import each other."""
    edges = pipeline_edges()
    p = "hfcompress.pipeline"
    assert edges[f"{p}.spec"] == set()
    upper = {f"{p}.registry", f"{p}.config", f"{p}.run", f"{p}.stages", f"{p}.context", f"{p}.report"}
    for name, targets in edges.items():
        if name.startswith(f"{p}.tasks") or name == f"{p}.student_search":
            assert not {t for t in targets if t in upper or t.startswith(f"{p}.stages")}, name
        if name.startswith(f"{p}.stages."):
            assert not {t for t in targets if t.startswith(f"{p}.stages.")}, name
    importers = sorted(name for name, targets in edges.items() if f"{p}.registry" in targets)
    assert importers == [f"{p}.config", f"{p}.run"]


TASK_TYPES = ("single_label_classification", "multi_label_classification", "token_classification", "causal_lm")


def reads_the_task_type(source: str) -> list[str]:
    """What in ``source`` decides by the task: ``.task_type``, ``is_lm``/``is_causal_lm``, a task type's name as
    a string, or an import of one task's module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("task_type", "is_lm", "is_causal_lm", "lm"):
            found.append(f".{node.attr}")
        elif isinstance(node, ast.Name) and node.id in ("is_causal_lm", "CAUSAL_LM"):
            found.append(node.id)
        elif isinstance(node, ast.Constant) and node.value in TASK_TYPES:
            found.append(repr(node.value))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1] in ("causal_lm", "classifier"):
            found.append(f"import {node.module}")
    return found


def test_the_task_type_check_finds_what_the_stages_used_to_do():
    old = 'if ctx.is_lm:\n    pass\nif config.pipeline.task_type == "token_classification":\n    pass\n'
    assert reads_the_task_type(old) == [".is_lm", ".task_type", "'token_classification'"]


def test_no_stage_reads_the_task_type():
    stages = sorted((PIPELINE / "stages").glob("*.py"))
    assert len(stages) >= 7
    assert {path.name: reads_the_task_type(path.read_text()) for path in stages} == {path.name: [] for path in stages}
    for name in ("student_search.py", "report.py", "context.py", "run.py", "registry.py", "spec.py"):
        assert reads_the_task_type((PIPELINE / name).read_text()) == [], name


def test_no_public_name_hides_a_module():
    """``hfcompress.finetune`` was a module and, once imported, a function: ``hfcompress.finetune.finetune``
    then failed."""
    import hfcompress

    hidden = []
    for info in pkgutil.walk_packages(hfcompress.__path__, "hfcompress."):
        if not info.ispkg:
            continue
        package = importlib.import_module(info.name)
        for sub in pkgutil.iter_modules(package.__path__):
            if sub.name in getattr(package, "__all__", ()):
                hidden.append(f"{info.name}.{sub.name}")
    for sub in pkgutil.iter_modules(hfcompress.__path__):
        if sub.name in hfcompress.__all__:
            hidden.append(f"hfcompress.{sub.name}")
    assert hidden == []
