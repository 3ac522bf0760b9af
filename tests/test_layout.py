"""The package's layout rules, read from the source (AST, nothing imported):

(a) no import cycle among leukemia_tf's modules at import time (module-level imports,
    relative ones resolved);
(b) no `leukemia_tf` import inside a function outside leukemia_tf/cli/, unless it must
    stay lazy (ALLOWED_LAZY, each entry saying why; the line says `# lazy: <why>`);
(c) no folder of leukemia_tf holds more than 12 modules;
(d) no function over 60 lines, no module over 450 lines.
"""
import ast
import os
from typing import Dict, Iterable, List, Set, Tuple

import pytest

from tests.helpers import REPO

PACKAGE = "leukemia_tf"
MAX_MODULES, MAX_FUNCTION, MAX_MODULE = 12, 60, 450

# (module, the leukemia_tf module it imports inside a function): imports that must stay
# lazy, so the importing module loads without TensorFlow.
ALLOWED_LAZY = {
    # the converter's parent process forks its workers without TensorFlow
    ("leukemia_tf.data.convert", "leukemia_tf.data.records"),
    ("leukemia_tf.data.convert", "leukemia_tf.data.preprocess"),
    # the converter's output-folder rules and worker code load without TensorFlow
    ("leukemia_tf.data.conversion.output_dir", "leukemia_tf.data.records"),
    ("leukemia_tf.data.conversion.encode", "leukemia_tf.data.preprocess"),
    # a pooled study is read (leukemia-compare) without TensorFlow; heldout trains with it
    ("leukemia_tf.crossval.pooled", "leukemia_tf.crossval.heldout"),
}


# ---------------------------------------------------------------- reading the source
def modules(root: str = os.path.join(REPO, PACKAGE)) -> Dict[str, str]:
    """{dotted module name: path} of every .py file under `root`."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(root))[:-3].split(os.sep)
                out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = path
    return out


def _is_package(name: str, paths: Dict[str, str]) -> bool:
    return paths.get(name, "").endswith("__init__.py")


def imported(node: ast.AST, module: str, is_package: bool, known: Iterable[str]) -> List[str]:
    """The modules of `known` an import statement names, relative imports resolved
    (`from a import b` names a.b when that is a module, else a)."""
    known = set(known)
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    out = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    if len(out) < len(node.names) and base in known:
        out.append(base)
    return out


def _imports(tree: ast.AST, in_function: bool):
    """Import statements at module level (in_function False) or inside functions."""
    def walk(node, inside):
        for child in ast.iter_child_nodes(node):
            now = inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                               ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and now == in_function:
                yield child
            yield from walk(child, now)
    yield from walk(tree, False)


def import_graph(paths: Dict[str, str]) -> Dict[str, Set[str]]:
    """{module: modules it imports at import time}."""
    graph = {}
    for name, path in paths.items():
        tree = ast.parse(open(path, encoding="utf-8").read())
        graph[name] = {target for node in _imports(tree, in_function=False)
                       for target in imported(node, name, _is_package(name, paths), paths)}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of `graph` with more than one module, or one
    that imports itself (Tarjan's algorithm), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def lazy_imports(source: str, module: str, known: Iterable[str],
                 is_package: bool = False) -> List[Tuple[str, int, str]]:
    """(imported module, line, source line) of each package import inside a function."""
    lines = source.splitlines()
    return [(target, node.lineno, lines[node.lineno - 1])
            for node in _imports(ast.parse(source), in_function=True)
            for target in imported(node, module, is_package, known)]


def long_functions(source: str, limit: int = MAX_FUNCTION) -> List[Tuple[str, int]]:
    """(function name, lines) of every function longer than `limit` lines."""
    return [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > limit]


def crowded_folders(paths: Iterable[str], limit: int = MAX_MODULES) -> Dict[str, int]:
    """{folder: modules} of every folder holding more than `limit` modules."""
    counts: Dict[str, int] = {}
    for path in paths:
        counts[os.path.dirname(path)] = counts.get(os.path.dirname(path), 0) + 1
    return {folder: n for folder, n in counts.items() if n > limit}


PATHS = modules()


# ---------------------------------------------------------------- the rules
def test_no_import_cycle():
    found = cycles(import_graph(PATHS))
    assert not found, f"import cycles (strongly connected components): {found}"


def test_no_lazy_package_import_outside_the_command_lines():
    bad, kept = [], set()
    for name, path in sorted(PATHS.items()):
        if name.startswith(f"{PACKAGE}.cli"):
            continue
        source = open(path, encoding="utf-8").read()
        for target, line, text in lazy_imports(source, name, PATHS,
                                               _is_package(name, PATHS)):
            if (name, target) in ALLOWED_LAZY and "# lazy:" in text:
                kept.add((name, target))
            else:
                bad.append(f"{os.path.relpath(path, REPO)}:{line}: {text.strip()} ({target})")
    assert not bad, ("imports inside functions (import at module level, or add to "
                     "ALLOWED_LAZY with why and say `# lazy: <why>` on the line):\n"
                     + "\n".join(bad))
    assert kept == ALLOWED_LAZY, f"ALLOWED_LAZY lists imports no longer lazy: " \
                                 f"{sorted(ALLOWED_LAZY - kept)}"


def test_no_folder_holds_more_than_12_modules():
    crowded = crowded_folders(os.path.relpath(p, REPO) for p in PATHS.values())
    assert not crowded, f"folders of more than {MAX_MODULES} modules: {crowded}"


def test_no_long_function_or_module():
    long = {}
    for name, path in PATHS.items():
        source = open(path, encoding="utf-8").read()
        if len(source.splitlines()) > MAX_MODULE:
            long[name] = len(source.splitlines())
        long.update({f"{name}.{f}": n for f, n in long_functions(source)})
    assert not long, f"over {MAX_FUNCTION} lines (functions) or {MAX_MODULE} (modules): {long}"


# ---------------------------------------------------------------- the rules can fail
def test_cycle_finder_finds_a_cycle_and_only_that():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_relative_imports_are_resolved():
    known = {"p", "p.q", "p.q.r", "p.q.s", "p.t"}
    tree = ast.parse("from . import s\nfrom .. import t\nfrom .s import x\n")
    found = [imported(n, "p.q.r", False, known) for n in tree.body]
    assert found == [["p.q.s"], ["p.t"], ["p.q.s"]]
    assert imported(ast.parse("from . import r").body[0], "p.q", True, known) == ["p.q.r"]


def test_the_other_rules_catch_what_they_forbid():
    source = ("import os\n\n\ndef f():\n    from p import q\n    return q\n\n\n"
              "def g():\n" + "    x = 1\n" * MAX_FUNCTION)
    assert lazy_imports(source, "p.m", {"p", "p.q"}) == [("p.q", 5, "    from p import q")]
    assert long_functions(source) == [("g", MAX_FUNCTION + 1)]
    folder = os.path.join("p", "x")
    assert crowded_folders([os.path.join(folder, f"m{i}.py") for i in range(13)]) == {
        folder: 13}


@pytest.mark.parametrize("folder", ["", "cli", "data", "training", "bench"])
def test_the_floor_and_its_folders_are_read(folder):
    """The rules above see the package (a wrong root would check nothing)."""
    name = ".".join(filter(None, [PACKAGE, folder.replace(os.sep, ".")]))
    assert name in PATHS and any(m.startswith(name + ".") for m in PATHS)


def test_the_import_graph_holds_the_package_imports():
    graph = import_graph(PATHS)
    assert "leukemia_tf.training.preflight" in graph["leukemia_tf.training.loop"]
    assert "leukemia_tf.data.manifest" in graph["leukemia_tf.training.preflight"]
