"""The package's plan, checked from its source (AST, like tests/test_public_ray_api.py): stages in one order,
no import circles, imports inside functions only for deferred heavy dependencies, short functions, small modules.

Stages, each importing only itself and the ones before it:
    foundation (thorax_ray/*.py: storage, labels, names, config I/O, checkpoint, console, ...)
    < data (data/, synthetic/) < models < attribution < train < tune < scoring < evaluation
and nothing in scoring/ or evaluation/ imports thorax_ray.train. Imports inside functions count as imports."""
from __future__ import annotations

import ast
import os
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "thorax_ray"
STAGES = {"data": 1, "synthetic": 1, "models": 2, "attribution": 3, "train": 4, "tune": 5, "scoring": 6,
          "evaluation": 7}
NOT_FROM_TRAIN = ("scoring", "evaluation")  # they use what training made through checkpoints, never its code
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450
# Third-party packages that may be imported inside a function (with a "# deferred" comment saying why):
# heavy to import, or absent where parts of the package run without them (the GPU machine has no Ray, no
# pydantic, no botocore: tests/bench/test_gpu_bench_without_ray.py).
DEFERRABLE = {"ray", "captum", "pydicom", "torchvision", "matplotlib", "sklearn", "s3fs", "pydantic", "pydantic_core",
              "botocore", "deltalake"}


def read_package(root: str) -> dict[str, str]:
    """Module name -> source, for every .py file under `root` (the package folder)."""
    sources = {}
    base = os.path.dirname(root)
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                module = module.removesuffix(".__init__")
                with open(path, encoding="utf-8") as handle:
                    sources[module] = handle.read()
    return sources


def stage(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return parts[1], STAGES[parts[1]]
    return "foundation", 0


def _imports(tree: ast.AST, known: set[str]):
    """(imported package module, line, inside a function) for every import of a package module."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(sub) for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                yield name, node.lineno, id(node) in inside


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    known = set(sources)
    return {module: {target for target, _, _ in _imports(ast.parse(src), known) if target != module}
            for module, src in sources.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(sources: dict[str, str]) -> list[str]:
    """Every breach of the plan, one line each (empty: the package keeps to it)."""
    problems = []
    graph = import_graph(sources)
    problems += [f"import circle: {' <-> '.join(c)}" for c in circles(graph)]
    for module, targets in sorted(graph.items()):
        name, rank = stage(module)
        for target in sorted(targets):
            target_name, target_rank = stage(target)
            if target_rank > rank:
                problems.append(f"{module} ({name}) imports {target}, a later stage ({target_name})")
            if name in NOT_FROM_TRAIN and target_name == "train":
                problems.append(f"{module} imports {target}: {name} must not import thorax_ray.train")
    deferrable = wrappers(sources)
    for module, src in sorted(sources.items()):
        lines = src.splitlines()
        if len(lines) > MAX_MODULE_LINES:
            problems.append(f"{module}: {len(lines)} lines (at most {MAX_MODULE_LINES})")
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{module}.{node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        problems += _inner_import_problem(module, node.name, sub, lines, deferrable)
    return problems


def wrappers(sources: dict[str, str]) -> set[str]:
    """Package modules that import a deferrable dependency at module level (e.g. a Ray Data datasink): they
    may be imported inside a function too, which defers that dependency."""
    found = set()
    for module, src in sources.items():
        for node in ast.parse(src).body:
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] in DEFERRABLE for name in names):
                found.add(module)
    return found


def _inner_import_problem(module: str, function: str, node: ast.AST, lines: list[str],
                          deferrable: set[str]) -> list[str]:
    name = node.names[0].name if isinstance(node, ast.Import) else (node.module or "")
    line = lines[node.lineno - 1]
    allowed = name.split(".")[0] in DEFERRABLE or name in deferrable
    if allowed and "# deferred" in line:
        return []
    why = "not a deferrable heavy dependency" if not allowed else "no '# deferred: ...' comment saying why"
    return [f"{module}.{function} imports {name} inside the function, line {node.lineno}: {why}"]


def test_the_package_keeps_to_its_plan():
    sources = read_package(os.path.join(REPO, PACKAGE))
    assert len(sources) > 50
    problems = violations(sources)
    assert not problems, "\n".join(problems)


def _package(**modules: str) -> dict[str, str]:
    return {f"{PACKAGE}.{name}" if name != PACKAGE else name: textwrap.dedent(src)
            for name, src in modules.items()}


GOOD = dict(
    storage="import os\n",
    **{"data.manifest": "from thorax_ray import storage\n",
       "train.loop": "from thorax_ray.data.manifest import x\n",
       "scoring.job": "from thorax_ray.models.registry import build\n",
       "models.registry": "def build():\n    import torchvision  # deferred: slow import\n",
       "scoring.sink": "from ray.data import Datasink\n",
       "scoring.run": "def run():\n    from thorax_ray.scoring.sink import x  # deferred: Ray\n"},
)


def test_a_package_that_keeps_to_the_plan_passes():
    assert violations(_package(**GOOD)) == []


@pytest.mark.parametrize("change, expected", [
    ({"data.manifest": "from thorax_ray.train.loop import x\n"}, "a later stage (train)"),
    ({"storage": "def f():\n    from thorax_ray.data import manifest  # deferred: counts too\n"},
     "a later stage (data)"),
    ({"scoring.job": "from thorax_ray.train.loop import x\n"}, "scoring must not import thorax_ray.train"),
    ({"evaluation.run": "def f():\n    from thorax_ray.train import loop\n"},
     "evaluation must not import thorax_ray.train"),
    ({"models.a": "from thorax_ray.models import b\n", "models.b": "from thorax_ray.models.a import x\n"},
     "import circle: thorax_ray.models.a <-> thorax_ray.models.b"),
    ({"models.a": "def f():\n    from thorax_ray.models.b import y\n",
      "models.b": "from thorax_ray.models.a import x\n"}, "import circle"),
    ({"models.a": "def f():\n" + "    x = 1\n" * 60}, "thorax_ray.models.a.f: 61 lines"),
    ({"models.a": "x = 1\n" * 451}, "thorax_ray.models.a: 451 lines"),
    ({"models.a": "def f():\n    import json\n"}, "not a deferrable heavy dependency"),
    ({"models.a": "def f():\n    import ray\n"}, "no '# deferred: ...' comment"),
    ({"models.a": "def f():\n    from thorax_ray.models.b import x\n", "models.b": "x = 1\n"},
     "not a deferrable heavy dependency"),
])
def test_each_breach_is_caught(change, expected):
    problems = violations(_package(**{**GOOD, **change}))
    assert any(expected in problem for problem in problems), problems
