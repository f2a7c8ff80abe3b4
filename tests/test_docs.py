"""The documentation and the declarations stay in step: README size and paths, the generated flag table,
one declaration per default, no path manipulation."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tracked(*suffixes):
    files = subprocess.run(["git", "-C", ROOT, "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True).stdout.split()
    assert files, "git ls-files found nothing"
    return [f for f in files if f.endswith(suffixes) and os.path.isfile(os.path.join(ROOT, f))]


def test_readme_is_short_and_names_only_files_that_exist():
    text = open(os.path.join(ROOT, "README.md")).read()
    assert len(text.splitlines()) <= 300
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    paths = re.findall(r"`((?:src|scripts|scripts_llama|docs|data|patches|tests)/[\w./-]+)`", text)
    missing = [p for p in links + paths if not p.startswith("http") and not os.path.exists(os.path.join(ROOT, p))]
    assert links and paths and not missing, missing


def test_docs_link_only_to_files_that_exist():
    for name in tracked(".md"):
        folder = os.path.dirname(os.path.join(ROOT, name))
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", open(os.path.join(ROOT, name)).read()):
            if not link.startswith(("http", "mailto")):
                assert os.path.exists(os.path.join(folder, link)), (name, link)


def test_flag_table_is_generated_from_the_declarations():
    p = subprocess.run([sys.executable, "-m", "rkif.commands"], capture_output=True, text=True, check=True)
    with open(os.path.join(ROOT, "docs", "flags.md")) as f:
        assert f.read() == p.stdout, "docs/flags.md is out of date: python -m rkif.commands > docs/flags.md"


def test_each_default_is_declared_once():
    """The KIF and LoRA defaults appear as literals in settings.py only (recipes.py holds the recipe values),
    by pattern (the Python files are also read by value: test_no_python_file_restates_a_declared_default)."""
    patterns = [r"quantile\s*[:=][^,\n]*\b0\.8\b", r"beta[12]\s*[:=][^,\n]*\b0\.85\b",
                r"(inner|outer)_iterations\s*[:=][^,\n]*=\s*[48]\b", r"train_batch_size_outer\s*[:=][^,\n]*=\s*8\b",
                r"memory_data_ratio\s*[:=][^,\n]*=\s*2\b", r"lora_(r|alpha)\s*=\s*(8|32)\b",
                r"ewc_lambda\s*[:=][^,\n]*=\s*10000"]
    found = []
    for name in tracked(".py", ".sh"):
        if name in ("src/rkif/settings.py", "src/rkif/recipes.py") or name.startswith("tests/"):
            continue
        for n, line in enumerate(open(os.path.join(ROOT, name)), 1):
            if any(re.search(p, line) for p in patterns):
                found.append(f"{name}:{n}: {line.strip()}")
    assert not found, found


def declared_defaults():
    """{setting: its default} for every setting with one meaning: declared in one group only, with a default
    no backbone changes and that is not None ("the recipe's value")."""
    import dataclasses

    from rkif import settings
    from rkif.backbones import BACKBONES

    values = {}
    for group in vars(settings).values():
        if dataclasses.is_dataclass(group) and isinstance(group, type):
            for f in dataclasses.fields(group):
                values.setdefault(f.name, set()).add(repr(f.default))
    for backbone in BACKBONES.values():
        for name, value in {**backbone.training_defaults, **backbone.generation_defaults}.items():
            values.setdefault(name, set()).add(repr(value))
    return {name: eval(next(iter(v))) for name, v in values.items() if len(v) == 1 and v != {"None"}}


CHOSEN_IN_CALLS = {"task_id", "method_name", "methods", "backbone", "dataset_id"}


def restated_defaults(source, declared):
    """(line, setting, literal) wherever a literal equal to a setting's declared default stands next to its
    name: a keyword argument, a parameter default, or the fallback of a .get / .pop."""
    import ast

    not_literal = object()  # equal to no default

    def literal(node):
        try:
            return ast.literal_eval(node)  # 2, "rkif", -1, ...
        except ValueError:
            return not_literal

    def same(node, name):
        value = literal(node)
        return name in declared and type(value) is type(declared[name]) and value == declared[name]

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):  # a call naming what to run (task 0, RKIF) chooses it, whatever the default
            found += [(node.lineno, k.arg, literal(k.value)) for k in node.keywords
                      if k.arg and k.arg not in CHOSEN_IN_CALLS and same(k.value, k.arg)]
            if (isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop") and len(node.args) == 2
                    and isinstance(node.args[0], ast.Constant) and same(node.args[1], node.args[0].value)):
                found.append((node.lineno, node.args[0].value, literal(node.args[1])))
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
            a = node.args
            pairs = list(zip(a.args[len(a.args) - len(a.defaults):], a.defaults)) + [
                (arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            found += [(node.lineno, arg.arg, literal(d)) for arg, d in pairs if same(d, arg.arg)]
    return found


def test_the_restated_default_finder_finds_each_form():
    declared = {"memory_data_ratio": 2, "seed": 42, "quantile": 0.8, "matrix": False}
    source = ("ratio = values.get('memory_data_ratio', 2)\n"
              "def plan(task, *, seed=42, quantile=0.5):\n    return run(quantile=0.8, matrix=False, seed=7)\n"
              "ok = values.get('memory_data_ratio', 3), run(matrix=0, task_id=0), values.pop('max_steps', -1)\n")
    declared.update(task_id=0, max_steps=-1)
    assert sorted(restated_defaults(source, declared)) == [(1, "memory_data_ratio", 2), (2, "seed", 42),
                                                          (3, "matrix", False), (3, "quantile", 0.8),
                                                          (4, "max_steps", -1)]


def test_no_python_file_restates_a_declared_default():
    """A default is read from its declaration (RunSettings.seed, default(KIFConfig, ...)), never written again: a
    copy does not follow when the declaration changes."""
    declared = declared_defaults()
    assert declared["memory_data_ratio"] == 2 and declared["seed"] == 42
    # training's precision differs by backbone (fp32, LLaMA auto): no single default; generation's is its own name
    assert "precision" not in declared and declared["gen_precision"] == "auto"
    found = []
    for name in tracked(".py"):
        if name in ("src/rkif/settings.py", "src/rkif/recipes.py") or name.startswith("tests/"):
            continue
        found += [f"{name}:{line}: {setting}={value!r}" for line, setting, value in
                  restated_defaults(open(os.path.join(ROOT, name)).read(), declared)]
    assert not found, "\n".join(found)


def test_no_path_manipulation_and_no_reference_to_a_missing_design_doc():
    for name in tracked(".py", ".sh", ".md", "Makefile", ".ini"):
        text = open(os.path.join(ROOT, name)).read()
        if name != "tests/test_docs.py":
            assert "sys.path.insert" not in text and "sys.path.append" not in text, name
            assert "PYTHONPATH=src" not in text, name
            assert "design doc section" not in text, name
