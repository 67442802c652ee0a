"""The package's shape: pipeline/ holds only verbs, no verb imports another, no import cycles."""

import ast
import pkgutil
from pathlib import Path

import segpipe

ROOT = Path(segpipe.__file__).parent
VERBS = {"preprocess", "fit", "infer", "evaluate", "export", "demo"}
COMPOSERS = {"demo"}  # `segpipe demo` runs the four verbs in a row: composing them is its job


def _modules() -> dict[str, Path]:
    out = {}
    for info in pkgutil.walk_packages([str(ROOT)], "segpipe."):
        path = ROOT.joinpath(*info.name.split(".")[1:])
        out[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    out["segpipe"] = ROOT / "__init__.py"
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """segpipe modules `name` imports anywhere in its file (top level or inside functions)."""
    found: set[str] = set()
    skipped: set[int] = set()  # imports only for type checkers do not run
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            skipped.update(id(n) for n in ast.walk(node))
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_pipeline_holds_only_verbs():
    names = {p.stem for p in (ROOT / "pipeline").glob("*.py")} - {"__init__"}
    assert names <= VERBS, f"support modules in segpipe/pipeline/: {sorted(names - VERBS)}"
    assert {"preprocess", "fit", "infer", "evaluate", "export"} <= names


def test_no_verb_imports_another_verb():
    graph = _graph()
    offenders = [
        f"{name} imports {dep}"
        for name, deps in graph.items()
        if name.startswith("segpipe.pipeline.") and name.rsplit(".", 1)[1] not in COMPOSERS
        for dep in deps
        if dep.startswith("segpipe.pipeline.") and dep != "segpipe.pipeline"
    ]
    assert not offenders, offenders


def test_support_packages_do_not_import_verbs_or_the_cli():
    graph = _graph()
    upper = ("segpipe.pipeline.", "segpipe.cli")
    offenders = [
        f"{name} imports {dep}"
        for name, deps in graph.items()
        if not name.startswith(upper) and name not in ("segpipe.__main__",)
        for dep in deps
        if dep.startswith(upper)
    ]
    assert not offenders, offenders


def test_reports_do_not_depend_on_training():
    graph = _graph()
    offenders = [f"{n} imports {d}" for n, deps in graph.items() if n.startswith("segpipe.reports") for d in deps
                 if d.startswith(("segpipe.training", "segpipe.pipeline"))]
    assert not offenders, offenders


def test_networks_and_data_stay_below_training():
    """networks/ imports nothing of segpipe outside itself but SegpipeError (at run time); data/ knows nothing of training."""
    graph = _graph()
    offenders = [f"{n} imports {d}" for n, deps in graph.items() if n.startswith("segpipe.networks") for d in deps
                 if not d.startswith("segpipe.networks") and d not in ("segpipe", "segpipe.errors")]
    offenders += [f"{n} imports {d}" for n, deps in graph.items() if n.startswith("segpipe.data") for d in deps
                  if d.startswith(("segpipe.training", "segpipe.pipeline", "segpipe.artifacts", "segpipe.runtime"))]
    assert not offenders, offenders


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ importing its own submodules is not a cycle through the submodule's parent
    for name in graph:
        graph[name] = {d for d in graph[name] if not (name.startswith(d + ".") and graph.get(d, set()) <= {name})}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_the_checker_sees_imports():
    """The graph is not empty by mistake: known edges are found, including imports inside functions."""
    graph = _graph()
    assert "segpipe.artifacts.plan" in graph["segpipe.pipeline.fit"]
    assert "segpipe.pipeline.fit" in graph["segpipe.cli"]  # imported inside the command
    assert "segpipe.pipeline.infer" in graph["segpipe.pipeline.demo"]
