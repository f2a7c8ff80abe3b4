"""The package's imports run one way (no circle, function-level imports included), and follow one policy:
imports at the top of a module, except the optional or heavy dependencies that only some commands use."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "rkif")
# imported where used: optional extras, or heavy and needed by one command only
LAZY = {"matplotlib", "rouge_score", "bitsandbytes", "sentencepiece"}
# the Trainer stack (transformers.trainer, accelerate): imported where a task trains, not to check its flags
LAZY_MODULES = {"rkif.loop", "rkif.kif_trainer"}


def modules(package=PACKAGE):
    """{dotted module name: path} of every module under package (rkif, rkif.methods.ewc, ...)."""
    found = {}
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(package))[:-3].split(os.sep)
                found[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(folder, name)
    return found


def imports(name, path):
    """(imported names, line, at the top level?) for every import statement of the module, function-level
    ones included; relative imports resolved, `from X import y` naming X and X.y (which may be a module)."""
    tree = ast.parse(open(path).read())
    top = {id(n) for n in tree.body}
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        yield targets, node.lineno, id(node) in top


def graph(found):
    return {name: {t for targets, _, _ in imports(name, path) for t in targets if t in found and t != name}
            for name, path in found.items()}


def cycles(edges):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_finder_sees_a_circle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("from pkg.a import y\n")
    assert cycles(graph(modules(str(pkg)))) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_package_has_no_import_circle():
    found = modules()
    assert "rkif.methods.ewc" in found and "rkif.settings" in found
    assert cycles(graph(found)) == []


def test_checking_a_training_command_s_flags_does_not_load_the_trainer():
    import subprocess
    import sys

    code = ("import sys, rkif.commands; heavy = {'transformers.trainer', 'rkif.loop', 'rkif.kif_trainer', 'datasets'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_settings_imports_nothing_from_the_package_but_its_error_class():
    """settings.py imports rkif.errors (InputError, which its groups raise) and nothing else of the package;
    rkif.errors imports nothing of the package."""
    found = modules()
    assert {t for targets, _, _ in imports("rkif.settings", found["rkif.settings"]) for t in targets
            if t.split(".")[0] == "rkif"} == {"rkif.errors", "rkif.errors.InputError"}
    assert [t for targets, _, _ in imports("rkif.errors", found["rkif.errors"]) for t in targets
            if t.split(".")[0] == "rkif"] == []


def test_imports_are_at_the_top_except_the_optional_or_heavy_ones():
    inside = [f"{name}:{line} {targets[0]}" for name, path in modules().items()
              for targets, line, at_top in imports(name, path)
              if not at_top and targets[0].split(".")[0] not in LAZY and targets[0] not in LAZY_MODULES]
    assert inside == []
