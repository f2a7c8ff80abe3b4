"""patches/rkif_patch.py on a temporary copy of the installed transformers (never the real one)."""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest
import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATCH = os.path.join(ROOT, "patches", "rkif_patch.py")
FILES = ("trainer.py", "training_args.py")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def patch(*args):
    return subprocess.run([sys.executable, PATCH, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    shutil.copytree(os.path.dirname(transformers.__file__), root / "transformers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_apply_twice_run_both_apis_and_revert(copy, tiny_t5, bench_dir, tmp_path):
    tf = str(copy / "transformers")
    before = {f: sha(os.path.join(tf, f)) for f in FILES}
    first = patch("apply", "--transformers_dir", tf)
    assert first.returncode == 0, first.stderr
    patched = {f: sha(os.path.join(tf, f)) for f in FILES}
    assert all(patched[f] != before[f] for f in FILES)
    second = patch("apply", "--transformers_dir", tf)
    assert second.returncode == 0 and second.stdout.count("already patched") == 2
    assert {f: sha(os.path.join(tf, f)) for f in FILES} == patched
    assert "+    inner_iterations: int = field(" in patch("diff", "--transformers_dir", tf).stdout

    worker = os.path.join(ROOT, "tests", "patched_worker.py")
    runs = {}
    for mode, pythonpath in (("keyword", str(copy)), ("subclass", "")):
        out = str(tmp_path / mode)
        env = {**os.environ, "PYTHONPATH": pythonpath, "CUDA_VISIBLE_DEVICES": ""}
        p = subprocess.run([sys.executable, worker, mode, out, tiny_t5, bench_dir], env=env, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        expected = "transformers.trainer.Trainer" if mode == "keyword" else "rkif.trainer.RecurrentKIFTrainer"
        assert f"{mode}: {expected}" in p.stdout
        runs[mode] = out
    for task in ("0-weather", "1-sport"):
        a = torch.load(os.path.join(runs["keyword"], task, "adapter_model.bin"))
        b = torch.load(os.path.join(runs["subclass"], task, "adapter_model.bin"))
        assert a.keys() == b.keys() and len(a) == 24
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), (task, k)
    # the second task really moved the weights
    a0 = torch.load(os.path.join(runs["keyword"], "0-weather", "adapter_model.bin"))
    a1 = torch.load(os.path.join(runs["keyword"], "1-sport", "adapter_model.bin"))
    assert any(not torch.equal(a0[k], a1[k]) for k in a0)

    reverted = patch("revert", "--transformers_dir", tf)
    assert reverted.returncode == 0, reverted.stderr
    assert {f: sha(os.path.join(tf, f)) for f in FILES} == before
    assert not any(os.path.exists(os.path.join(tf, f + ".rkif-orig")) for f in FILES)
    assert "not patched" in patch("revert", "--transformers_dir", tf).stdout


def test_out_folder_leaves_the_installation_untouched(copy, tmp_path):
    tf = str(copy / "transformers")
    before = {f: sha(os.path.join(tf, f)) for f in FILES}
    p = patch("apply", "--transformers_dir", tf, "--out", str(tmp_path / "patched"))
    assert p.returncode == 0, p.stderr
    assert {f: sha(os.path.join(tf, f)) for f in FILES} == before
    text = (tmp_path / "patched" / "training_args.py").read_text()
    assert "train_batch_size_outer: int = field(" in text


def test_other_version_or_edited_files_are_refused(copy, tmp_path):
    other = tmp_path / "transformers"
    other.mkdir()
    shutil.copy(copy / "transformers" / "trainer.py", other / "trainer.py")
    shutil.copy(copy / "transformers" / "training_args.py", other / "training_args.py")
    (other / "__init__.py").write_text('__version__ = "4.29.0"\n')
    p = patch("apply", "--transformers_dir", str(other))
    assert p.returncode != 0 and "holds transformers 4.29.0; this patch is for transformers 4.28.1 only" in p.stderr
    (other / "__init__.py").write_text('__version__ = "4.28.1"\n')
    with open(other / "trainer.py", "a") as f:
        f.write("\n# local edit\n")
    before = sha(other / "trainer.py")
    p = patch("apply", "--transformers_dir", str(other))
    assert p.returncode != 0 and "differ from transformers 4.28.1" in p.stderr
    assert sha(other / "trainer.py") == before and not (other / "trainer.py.rkif-orig").exists()
