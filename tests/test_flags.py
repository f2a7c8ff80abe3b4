"""Every bad flag is refused before any work starts: exit 2, one `error:` line naming it, nothing written.

The table runs real processes (two at a time: they are dominated by imports).
"""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import cli_args
from rkif.errors import InputError
from rkif.cli_runner import check_argv
from rkif.base_model import check_base_model
from rkif.lora import parse_target_modules, resolve_target_modules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def f(a, b=1, learning_rate=3e-4, matrix=False):
    pass


@pytest.mark.parametrize("argv", [
    [], ["x"], ["--a=1"], ["--a", "1", "--b", "-1"], ["--learning-rate", "1e-4"], ["--matrix"],
    ["--nomatrix"], ["--matrix", "--a", "x"], ["-l", "0.1"], ["--a", "x", "--", "--help"], ["--help"],
    ["--b=-2.5e-3", "x"], ["--learning_rate", "-1", "x"],
])
def test_check_argv_accepts_what_fire_reads(argv):
    check_argv(f, argv)


@pytest.mark.parametrize("argv,message", [
    (["--learning_rat", "1e-4"], "unknown flag --learning_rat (did you mean --learning_rate?)"),
    (["--lr=1"], "unknown flag --lr; the flags are: --a, --b, --learning_rate, --matrix"),
    (["--nomatrx"], "unknown flag --nomatrx (did you mean --matrix?)"),
    (["-z", "1"], "unknown flag -z: -z must name exactly one flag"),
    (["x", "y"], "unexpected argument 'y': settings are given as --flag value"),
    (["--a", "x", "--b", "2", "y"], "unexpected argument 'y'"),
])
def test_check_argv_refuses(argv, message):
    with pytest.raises(InputError) as e:
        check_argv(f, argv)
    assert message in str(e.value)


def test_base_model_check(tmp_path, monkeypatch):
    check_base_model("t5-large")  # a hub id is left to from_pretrained when downloads are possible
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for value, message in (("t5-large", "cannot be downloaded (HF_HUB_OFFLINE is set)"),
                           (str(tmp_path / "nope"), "does not exist"), (str(tmp_path), "holds no config.json"),
                           ("", "required")):
        with pytest.raises(InputError) as e:
            check_base_model(value)
        assert message in str(e.value)


def test_target_modules_resolve_to_whole_linear_names(tiny_t5, tmp_path):
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5)
    assert parse_target_modules("[q, v]") == ["q", "v"] == parse_target_modules(("q", "v"))
    assert resolve_target_modules(model, ["q", "v"]) == ["q", "v"]  # the released config, unchanged
    # peft matches "k" as a suffix of "block" too; the resolved targets select the k layers only
    targets = resolve_target_modules(model, ["q", "k"])
    assert isinstance(targets, str)
    expected = sum(n.endswith((".q", ".k")) for n, _ in model.named_modules())
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=targets, task_type=TaskType.SEQ_2_SEQ_LM))
    wrapped = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in lora.named_parameters() if "lora_A" in n}
    assert wrapped == {"q", "k"} and sum("lora_A" in n for n, _ in lora.named_parameters()) == expected
    lora.save_pretrained(str(tmp_path / "a"))
    reloaded = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), str(tmp_path / "a"))
    assert sum("lora_A" in n for n, _ in reloaded.named_parameters()) == expected
    for names, message in ((["q", "zz"], "no module of the model is named 'zz'; Linear layers are named e.g."),
                           (["block"], "'block' names encoder.block (ModuleList), not a Linear layer")):
        with pytest.raises(InputError) as e:
            resolve_target_modules(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), names)
        assert message in str(e.value)


def _run(argv):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.join(ROOT, "src")}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def _in_parallel(cases):
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(_run, cases))


SCRIPTS = ["src/finetune_KIF_t5lora.py", "src/finetune_KIF_llama.py", "src/generate_avgPerf_t5lora.py",
           "src/generate_bwt_t5lora.py", "src/generate_avgPerf_llama.py", "src/generate_bwt_llama.py",
           "src/eval_avgPerf.py", "src/eval_bwt.py", "src/run_pipeline.py", "src/demo.py", "data/preprocess.py",
           "data/validate.py", "data/download.py", "scripts/bench_kif_overhead.py", "scripts/bench_generation.py"]


def test_every_script_refuses_a_misspelled_flag(tmp_path, capsys):
    """The commands of src/ through their entry points in this process (their script files only call them:
    tests/test_commands.py), one of them and every other script as a real process."""
    from rkif.commands import COMMANDS

    commands = {c.script: c for c in COMMANDS}
    for script in (s for s in SCRIPTS if s in commands):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            commands[script].main(["--output_pathh", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: unknown flag --output_pathh"), (script, err[-500:])
    as_processes = [SCRIPTS[0]] + [s for s in SCRIPTS if s not in commands]
    results = _in_parallel([[os.path.join(ROOT, s), "--output_pathh", str(tmp_path / "o")] for s in as_processes])
    for script, p in zip(as_processes, results):
        assert p.returncode == 2, (script, p.stderr[-500:])
        assert p.stderr.startswith("error: unknown flag --output_pathh"), (script, p.stderr[-500:])
        assert "Traceback" not in p.stderr
    proc = _run(["-m", "rkif.tiny", str(tmp_path / "m"), "--vocab_sise", "100"])
    assert proc.returncode == 2 and "unknown flag --vocab_sise (did you mean --vocab_size?)" in proc.stderr
    assert not os.listdir(tmp_path)


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def _no_config(tmp_path):
    os.makedirs(tmp_path / "empty_model", exist_ok=True)
    return {"base_model": str(tmp_path / "empty_model")}


# name: (prepare(data_dir, tmp_path) -> flags, expected message). Flags override conftest.cli_args.
CASES = {
    "misspelled flag": (lambda d, t: {"learning_rat": 1e-4}, "unknown flag --learning_rat (did you mean "
                                                              "--learning_rate?)"),
    "surplus positional": (lambda d, t: {"": "extra"}, "unexpected argument"),
    "base model folder missing": (lambda d, t: {"base_model": str(t / "nope")}, "--base_model: folder"),
    "base model without config": (lambda d, t: _no_config(t), "holds no config.json"),
    "lora_r 0": (lambda d, t: {"lora_r": 0}, "--lora_r: must be > 0, got 0"),
    "lora_r not a number": (lambda d, t: {"lora_r": "eight"}, "--lora_r: expected an integer, got 'eight'"),
    "lora_alpha negative": (lambda d, t: {"lora_alpha": -4}, "--lora_alpha: must be > 0"),
    "learning_rate -1": (lambda d, t: {"learning_rate": -1}, "--learning_rate: must be > 0, got -1"),
    "lora_dropout 1": (lambda d, t: {"lora_dropout": 1.0}, "--lora_dropout: must be in [0, 1), got 1.0"),
    "num_epochs 0": (lambda d, t: {"num_epochs": 0}, "--num_epochs 0 with --max_steps -1: no training step"),
    "warmup negative": (lambda d, t: {"warmup_steps": -5}, "--warmup_steps: must be >= 0"),
    "resume folder missing": (lambda d, t: {"resume_from_checkpoint": str(t / "checkpoint-9")},
                              "--resume_from_checkpoint: '"),
    "resume without checkpoint": (lambda d, t: {"resume_from_checkpoint": True},
                                  "--resume_from_checkpoint: no complete checkpoint-N folder in"),
    "target module not Linear": (lambda d, t: {"lora_target_modules": "q,block"},
                                 "--lora_target_modules: 'block' names encoder.block (ModuleList)"),
    "target module unknown": (lambda d, t: {"lora_target_modules": "q,query"},
                              "--lora_target_modules: no module of the model is named 'query'"),
    "unknown dataset_id": (lambda d, t: {"dataset_id": 9}, "--dataset_id: unknown order 9"),
    "task_id out of range": (lambda d, t: {"task_id": 3}, "--task_id: 3 is out of range; this order has tasks 0..2"),
    "unknown task": (lambda d, t: _write(os.path.join(d, "order.json"), '["nosuchtask", "weather"]'),
                     "nosuchtask_T5.json: data file not found"),
    "missing data file": (lambda d, t: os.remove(os.path.join(d, "dev", "weather_T5.json")),
                          "dev/weather_T5.json: data file not found"),
    "malformed JSON": (lambda d, t: _write(os.path.join(d, "train", "weather_T5.json"), '[{"input": "a",'),
                       "train/weather_T5.json: malformed JSON"),
    "record without output": (lambda d, t: _write(os.path.join(d, "train", "weather_T5.json"),
                                                  '[{"id": "w_0", "input": "a"}]'),
                              "train/weather_T5.json: record 0 (id w_0) has no 'output' field"),
    "record without input": (lambda d, t: _write(os.path.join(d, "train", "weather_T5.json"), '[{"output": "a"}]'),
                             "has no 'input' field"),
    "empty task file": (lambda d, t: _write(os.path.join(d, "train", "weather_T5.json"), "[]"),
                        "train/weather_T5.json: the task file holds no records"),
    "missing previous adapter": (lambda d, t: {"task_id": 1}, "the adapter of task 0 (weather) is missing"),
    "unknown method": (lambda d, t: {"method_name": "Foo"}, "--method_name: unknown method 'Foo'"),
    "batch not a multiple": (lambda d, t: {"batch_size": 5}, "--batch_size 5 must be a positive multiple"),
    "bad quantile": (lambda d, t: {"quantile": 1.5}, "--quantile must be in [0, 1]"),
    "fp16 for T5": (lambda d, t: {"precision": "fp16"}, "--precision fp16: T5 overflows in float16"),
    "bf16 on CPU": (lambda d, t: {"precision": "bf16"}, "--precision bf16 needs a GPU"),
    "tf32 on CPU": (lambda d, t: {"tf32": True}, "--tf32 needs an NVIDIA GPU of the Ampere generation"),
    "unknown reporter": (lambda d, t: {"report_to": "mlflow"}, "--report_to: unknown 'mlflow'"),
    "memory ratio over 100": (lambda d, t: {"memory_data_ratio": 150}, "--memory_data_ratio: must be in [0, 100]"),
}


# rows also run as real processes: the exit status, the one `error:` line and no traceback as a user sees them
IN_A_PROCESS = ("misspelled flag", "surplus positional", "malformed JSON", "bad quantile")


def _table_argvs(bench_dir, tiny_t5, tmp_path):
    argvs = {}
    for n, name in enumerate(sorted(CASES)):
        prepare, _ = CASES[name]
        case_dir = tmp_path / f"case{n}"
        data = str(case_dir / "data")
        shutil.copytree(bench_dir, data)
        flags = prepare(data, case_dir) or {}
        extra = flags.pop("", None)
        flags = {"task_id": 0, **flags}
        args = cli_args(tiny_t5, data, str(case_dir / "out"), flags.pop("task_id"), **flags)
        if flags.get("resume_from_checkpoint") is True:
            args = [a for a in args if not a.startswith("--resume_from_checkpoint")] + ["--resume_from_checkpoint"]
        argvs[name] = (case_dir, [*args, *([extra] if extra else [])])
    return argvs


def _check_row(name, returncode, stderr, case_dir):
    assert returncode == 2, (name, stderr[-1500:])
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and CASES[name][1] in errors[0], (name, stderr[-1500:])
    assert "Traceback" not in stderr, name
    assert not os.path.exists(case_dir / "out"), name


def test_bad_training_flags_table(bench_dir, tiny_t5, tmp_path, capsys):
    """Each row through the script's own entry point, in this process (one process per row took 3 minutes of
    imports); a few rows again as real processes."""
    from rkif.commands import entry_points

    argvs = _table_argvs(bench_dir, tiny_t5, tmp_path)
    for name, (case_dir, args) in argvs.items():
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            entry_points.train_t5(args)
        _check_row(name, e.value.code, capsys.readouterr().err, case_dir)
    script = os.path.join(ROOT, "src", "finetune_KIF_t5lora.py")
    for name, p in zip(IN_A_PROCESS, _in_parallel([[script, *argvs[name][1]] for name in IN_A_PROCESS])):
        _check_row(name, p.returncode, p.stderr, argvs[name][0])
    assert json.load(open(os.path.join(bench_dir, "order.json")))  # the fixture itself untouched


def test_help_shows_the_flags_even_for_a_function_taking_any_flag(capsys):
    """--help (or -h) anywhere shows fire's help and exits 0; run_pipeline's run_order takes **train_flags,
    which fire would otherwise hand --help to as a training flag."""
    from rkif.pipeline import run_order
    from rkif.training import TRAINING_FLAGS

    from rkif.cli_runner import run

    for argv in (["--help"], ["--dataset_id", "4", "-h"]):
        with pytest.raises(SystemExit) as e:
            run(run_order, argv, extra_flags=TRAINING_FLAGS)
        assert e.value.code == 0
        captured = capsys.readouterr()
        out = captured.out + captured.err  # fire writes its help to stderr
        assert "--base_model" in out and "--methods" in out and "unknown flag" not in out
