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
    p = subprocess.run([sys.executable, "-m", "rkif.settings"], capture_output=True, text=True, check=True)
    with open(os.path.join(ROOT, "docs", "flags.md")) as f:
        assert f.read() == p.stdout, "docs/flags.md is out of date: python -m rkif.settings > docs/flags.md"


def test_each_default_is_declared_once():
    """The KIF and LoRA defaults appear as literals in settings.py only (recipes.py holds the recipe values)."""
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


def test_no_path_manipulation_and_no_reference_to_a_missing_design_doc():
    for name in tracked(".py", ".sh", ".md", "Makefile", ".ini"):
        text = open(os.path.join(ROOT, name)).read()
        if name != "tests/test_docs.py":
            assert "sys.path.insert" not in text and "sys.path.append" not in text, name
            assert "PYTHONPATH=src" not in text, name
            assert "design doc section" not in text, name
