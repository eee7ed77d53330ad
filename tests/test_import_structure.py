"""gen_worker/'s imports follow a run: submit -> plan -> launch -> worker -> schedule -> output -> base, never back
up and never in a circle, counting imports inside functions and under TYPE_CHECKING too (a lazy import is still a
dependency). A package's implicit import of its own __init__ is not counted: it is how Python loads it."""
import ast
import glob
import os

from conftest import REPO

PACKAGE = os.path.join(REPO, "gen_worker")

# Layers from the top; a module may import its own layer or those below it. First matching prefix wins.
LAYERS = [
    ("submit", ["__main__", "cli", "api", "campaign", "named_settings", "slurm_task", "env_settings", "pack"]),
    ("plan", ["plan", "image_tools", "sweep"]),
    ("launch", ["local", "slurm", "container"]),
    ("worker", ["worker"]),
    ("schedule", ["schedule"]),
    ("output", ["output"]),
    ("base", ["spec", "flags", "prompts", "naming", "model_check", "model_source", "gpus", "errors", "atomic_files",
              "library_logs", "tiny_model", "tiny_models", "families", "levers", "__init__"]),
]


def _modules():
    """{dotted name under gen_worker ('' for the package itself): file}."""
    found = {}
    for path in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True):
        parts = os.path.relpath(path, PACKAGE)[:-3].split(os.sep)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(path, name, modules):
    """The gen_worker modules a file imports, anywhere in it."""
    package = name.rsplit(".", 1)[0] if not path.endswith("__init__.py") else name
    tree = ast.parse(open(path, encoding="utf-8").read())
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[:len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
                base = "gen_worker" + ("." + base if base else "")
            names = [f"{base}.{a.name}" for a in node.names]
            # `from gen_worker import cli` loads the package's __init__ implicitly (not counted); importing
            # one of its own names (`from gen_worker import generate`) is an import of it.
            if not all(f"{base}.{a.name}"[len("gen_worker."):] in modules for a in node.names):
                names.append(base)
        else:
            continue
        for full in names:
            if full == "gen_worker" or full.startswith("gen_worker."):
                dotted = full[len("gen_worker."):] if full != "gen_worker" else ""
                while dotted not in modules and "." in dotted:  # `from pkg.mod import name`: the module
                    dotted = dotted.rsplit(".", 1)[0]
                if dotted in modules and dotted != name:
                    targets.add(dotted)
    return targets


def _graph():
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _layer(name):
    first = name.split(".")[0] if name else "__init__"
    for index, (_, prefixes) in enumerate(LAYERS):
        if first in prefixes:
            return index
    raise AssertionError(f"gen_worker/{name.replace('.', '/')} is in no layer of this test: place it")


# The package's __init__ hands on generate() from api.py when asked for (PEP 562 __getattr__), so that
# `from gen_worker import generate` works and `import gen_worker` stays light: its one import up the layers.
LAZY_EXPORTS = {("", "api")}


def _is_own_package(module, target):
    """A package's modules may use what their package's __init__ hands on (schedule -> schedule.interface)."""
    return (target != "" and module.startswith(target + ".")) or (module, target) in LAZY_EXPORTS


def test_every_import_goes_down_the_layers():
    up = [f"{m} ({LAYERS[_layer(m)][0]}) imports {t} ({LAYERS[_layer(t)][0]})"
          for m, targets in _graph().items() for t in sorted(targets)
          if _layer(t) < _layer(m) and not _is_own_package(m, t)]
    assert up == []


def _cycles(graph):
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_checks_see_a_cycle_and_a_back_arrow():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _graph()
    assert "output.record" in graph["output.prepare"]  # the reader sees real edges...
    assert "worker.loop" in graph["image_tools"]  # ... those inside functions too
    assert _layer("output.record") > _layer("worker.loop")
