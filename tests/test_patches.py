"""patches/rkif_patch.py on a temporary copy of the installed transformers (never the real one)."""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import transformers

from rkif.compat import STACK

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


pinned_only = pytest.mark.skipif(STACK != "pinned", reason="patches/ patches transformers 4.28.1 only")


@pytest.mark.skipif(STACK == "pinned", reason="the current stack's refusal")
def test_the_current_stack_is_refused_with_the_way_out(copy):
    tf = str(copy / "transformers")
    before = {f: sha(os.path.join(tf, f)) for f in FILES}
    p = patch("apply", "--transformers_dir", tf)
    assert p.returncode != 0 and p.stderr.count("\n") == 1
    assert f"holds transformers {transformers.__version__}; this patch is for transformers 4.28.1 only" in p.stderr
    assert "make install" in p.stderr and "Trainer subclass" in p.stderr
    assert {f: sha(os.path.join(tf, f)) for f in FILES} == before


@pinned_only
def test_apply_twice_run_the_released_calls_and_revert(copy, tiny_t5, bench_dir, tmp_path):
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

    # The released script's calls on the patched Trainer, and our CLI (the subclass route), same settings
    order = str(tmp_path / "two.json")
    with open(order, "w") as f:
        json.dump(["weather", "sport"], f)
    env = {**os.environ, "PYTHONPATH": str(copy), "CUDA_VISIBLE_DEVICES": ""}
    released = str(tmp_path / "released")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "patched_worker.py"), released, tiny_t5,
                        bench_dir, order], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "trainer: transformers.trainer.Trainer" in p.stdout
    assert "importance from ipt_score (RankAllocatorLike): beta1=0.85, beta2=0.85, quantile=0.8" in p.stdout
    assert "task 0: 0 fusions, 12 steps" in p.stdout and "task 1: 6 fusions, 12 steps" in p.stdout
    ours = str(tmp_path / "ours")
    for t in (0, 1):
        q = subprocess.run([sys.executable, os.path.join(ROOT, "src", "finetune_KIF_t5lora.py"),
                            f"--base_model={tiny_t5}", f"--data_dir={bench_dir}", f"--dataset_id={order}",
                            f"--task_id={t}", f"--output_path={ours}", "--num_epochs=2", "--batch_size=4",
                            "--micro_batch_size=2", "--learning_rate=1e-3", "--warmup_steps=1",
                            "--inner_iterations=2", "--outer_iterations=2", "--train_batch_size_outer=4",
                            "--memory_data_ratio=25", "--val_set_size=0"],
                           env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True,
                           timeout=600)
        assert q.returncode == 0, q.stderr[-3000:]
    run = os.path.join(ours, f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_two")
    assert json.load(open(os.path.join(run, "1-sport", "run_info.json")))["kif"]["fusions"] == 6
    for task in ("0-weather", "1-sport"):
        a = torch.load(os.path.join(released, task, "adapter_model.bin"))
        b = torch.load(os.path.join(run, task, "adapter_model.bin"))
        assert a.keys() == b.keys() and len(a) == 24
        for k in a:
            assert torch.equal(a[k], b[k]), (task, k, (a[k] - b[k]).abs().max())
    a0 = torch.load(os.path.join(released, "0-weather", "adapter_model.bin"))
    a1 = torch.load(os.path.join(released, "1-sport", "adapter_model.bin"))
    assert any(not torch.equal(a0[k], a1[k]) for k in a0)  # the second task really moved the weights

    reverted = patch("revert", "--transformers_dir", tf)
    assert reverted.returncode == 0, reverted.stderr
    assert {f: sha(os.path.join(tf, f)) for f in FILES} == before
    assert not any(os.path.exists(os.path.join(tf, f + ".rkif-orig")) for f in FILES)
    assert "not patched" in patch("revert", "--transformers_dir", tf).stdout


@pinned_only
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
    assert p.stderr.count("\n") == 1  # one error line
    (other / "__init__.py").write_text('__version__ = "4.28.1"\n')
    with open(other / "trainer.py", "a") as f:
        f.write("\n# local edit\n")
    before = sha(other / "trainer.py")
    p = patch("apply", "--transformers_dir", str(other))
    assert p.returncode != 0 and "differ from transformers 4.28.1" in p.stderr
    assert sha(other / "trainer.py") == before and not (other / "trainer.py.rkif-orig").exists()


def test_ipt_score_needs_the_ema_coefficients():
    from rkif.importance import ImportanceTracker
    from rkif.legacy import importance_settings

    class Allocator:
        beta1, beta2, quantile = 0.8, 0.7, 0.6

    class Partial:
        beta1 = 0.8

    assert importance_settings(Allocator()) == (0.8, 0.7, 0.6)
    assert importance_settings(ImportanceTracker(0.5, 0.6), quantile=0.9) == (0.5, 0.6, 0.9)
    assert importance_settings(None) == (0.85, 0.85, 0.8)
    with pytest.raises(TypeError, match="ipt_score \\(Partial\\) has no beta2: pass the released RankAllocator"):
        importance_settings(Partial())
    with pytest.raises(TypeError, match="has no beta1 and no beta2"):
        importance_settings(object())


def released_comparison():
    """scripts/compare_with_released.py as a module (a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("compare_with_released",
                                                  os.path.join(ROOT, "scripts", "compare_with_released.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_with_released_strips_only_the_state_dict_override():
    strip_state_dict_override = released_comparison().strip_state_dict_override

    from rkif.errors import InputError

    script = ("    model.config.use_cache = False\n\n"
              "    old_state_dict = model.state_dict\n"
              "    model.state_dict = (\n"
              "        lambda self, *_, **__: get_peft_model_state_dict(\n"
              "            self, old_state_dict()\n"
              "        )\n"
              "    ).__get__(model, type(model))\n\n"
              "    trainer.train()\n")
    assert strip_state_dict_override(script) == "    model.config.use_cache = False\n\n\n    trainer.train()\n"
    with pytest.raises(InputError, match="found 0"):
        strip_state_dict_override("    trainer.train()\n")


def test_compare_with_released_edits_each_released_construct_exactly_once():
    edit_released = released_comparison().edit_released

    from rkif.errors import InputError

    llama = ('    model = LlamaForCausalLM.from_pretrained(\n        base_model,\n        load_in_8bit=True,\n'
             '        torch_dtype=torch.float16,\n        device_map=device_map,\n    )\n'
             '            fp16=True,\n            logging_steps=10,\n'
             '    old_state_dict = model.state_dict\n    model.state_dict = (\n'
             '        lambda self, *_, **__: get_peft_model_state_dict(\n            self, old_state_dict()\n'
             '        )\n    ).__get__(model, type(model))\n\n'
             '    if torch.__version__ >= "2" and sys.platform != "win32":\n        model = torch.compile(model)\n\n'
             '    trainer.train(resume_from_checkpoint=resume_from_checkpoint)\n')
    edited = edit_released("src/finetune_KIF_llama.py", llama)
    assert "load_in_8bit" not in edited and "torch_dtype=torch.float32," in edited and "fp16=False," in edited
    assert "torch.compile" not in edited and "state_dict" not in edited
    assert edited.endswith("    trainer.train(resume_from_checkpoint=resume_from_checkpoint)\n")
    generator = ('import fire\nimport gradio as gr\nimport torch\n    if not load_8bit:\n'
                 '        model.half()  # seems to fix bugs for some users.\n\n    model.eval()\n'
                 '    if torch.__version__ >= "2" and sys.platform != "win32":\n        model = torch.compile(model)\n')
    assert edit_released("src/generate_avgPerf.py", generator) == "import fire\nimport torch\n\n    model.eval()\n"
    with pytest.raises(InputError, match=r"the released src/generate_avgPerf.py: expected exactly one match for "
                                         r"the gradio import .*found 0"):
        edit_released("src/generate_avgPerf.py", generator.replace("import gradio as gr\n", ""))
