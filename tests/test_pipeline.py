"""The one-command pipeline, generation and evaluation scripts on a tiny T5 and the fixture benchmark."""

import json
import os
import subprocess
import sys

import pytest

from conftest import TASKS
from rkif.commands import entry_points
from rkif.pipeline import run_order

eval_avgperf_main = entry_points.eval_avgperf
pipeline_main = entry_points.pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = dict(num_epochs=2, eval_steps=3, warmup_steps=1, batch_size=4, micro_batch_size=2, inner_iterations=2,
            outer_iterations=2, train_batch_size_outer=4, memory_data_ratio=25, logging_steps=100,
            max_input_length=128, max_length=12, gen_batch_size=3)


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def acc(path):
    rows = read(path)
    return sum(r["pred"].strip().lower() == r["gold"].strip().lower() for r in rows) / len(rows)


@pytest.fixture(scope="module")
def pipeline(tiny_t5, bench_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pipe"))
    order = os.path.join(bench_dir, "order.json")
    summary = run_order(base_model=tiny_t5, dataset_id=order, methods="RKIF,SeqLoRA", data_dir=bench_dir,
                        output_path=out, **FAST)
    return out, order, summary


def run_name(tiny_t5, method):
    return f"{os.path.basename(tiny_t5)}lora_{method}_dataset_id_order"


def test_op_and_bwt_recomputed_from_the_prediction_files(pipeline, tiny_t5):
    out, _, summary = pipeline
    for method in ("RKIF", "SeqLoRA"):
        base = os.path.join(out, run_name(tiny_t5, method))
        final = [acc(os.path.join(base + "_avgPerf", f"{i}-{t}.jsonl")) for i, t in enumerate(TASKS)]
        diag = [acc(os.path.join(base + "_bwt", f"{i}-{t}.jsonl")) for i, t in enumerate(TASKS)]
        assert summary[method]["OP"] == pytest.approx(sum(final) / 3)
        assert summary[method]["BWT"] == pytest.approx(((final[0] - diag[0]) + (final[1] - diag[1])) / 2)
        rows = read(os.path.join(base + "_avgPerf", "1-sport.jsonl"))
        assert len(rows) == 8 and rows[0]["id"] == "sport_0" and set(rows[0]) == {"id", "gold", "pred"}
        metrics = json.load(open(os.path.join(base + "_bwt", "metrics.json")))
        assert metrics["BWT"] == pytest.approx(summary[method]["BWT"])
        assert os.path.isfile(os.path.join(base + "_avgPerf", "metrics.csv"))
    saved = json.load(open(os.path.join(out, "summary_dataset_id_order.json")))
    assert [r["method"] for r in saved["tasks"]] == ["RKIF", "SeqLoRA"]


def test_rerun_skips_finished_work_and_resumes_a_partial_file(pipeline, tiny_t5, bench_dir):
    out, order, summary = pipeline
    base = os.path.join(out, run_name(tiny_t5, "RKIF"))
    adapter = os.path.join(base, "2-food", "adapter_model.bin")
    pred = os.path.join(base + "_avgPerf", "0-weather.jsonl")
    before = read(pred)
    adapter_mtime, bwt_mtime = os.path.getmtime(adapter), os.path.getmtime(os.path.join(base + "_bwt", "1-sport.jsonl"))
    os.remove(pred)  # as if killed while writing it: three lines made it to disk
    with open(pred + ".partial", "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in before[:3]))
    again = run_order(base_model=tiny_t5, dataset_id=order, methods="RKIF", data_dir=bench_dir, output_path=out,
                      **FAST)
    assert os.path.getmtime(adapter) == adapter_mtime
    assert os.path.getmtime(os.path.join(base + "_bwt", "1-sport.jsonl")) == bwt_mtime
    assert read(pred) == before and not os.path.exists(pred + ".partial")
    assert again["RKIF"]["OP"] == summary["RKIF"]["OP"] and again["RKIF"]["BWT"] == summary["RKIF"]["BWT"]


def test_matrix_agrees_with_avgperf_and_bwt_and_is_plotted(pipeline, tiny_t5, bench_dir):
    out, order, summary = pipeline
    result = run_order(base_model=tiny_t5, dataset_id=order, methods="SeqLoRA", data_dir=bench_dir,
                       output_path=out, matrix=True, **FAST)["SeqLoRA"]
    base = os.path.join(out, run_name(tiny_t5, "SeqLoRA"))
    R = result["R"]
    assert [len(row) for row in R] == [1, 2, 3]
    for i, t in enumerate(TASKS):
        assert R[2][i] == acc(os.path.join(base + "_avgPerf", f"{i}-{t}.jsonl"))
        assert R[i][i] == acc(os.path.join(base + "_bwt", f"{i}-{t}.jsonl"))
    assert result["OP"] == pytest.approx(summary["SeqLoRA"]["OP"])
    assert result["BWT"] == pytest.approx(summary["SeqLoRA"]["BWT"])
    assert result["forgetting"] == pytest.approx(
        (max(R[0][0], R[1][0]) - R[2][0] + R[1][1] - R[2][1]) / 2)
    for png in (os.path.join(base + "_matrix", "accuracy_matrix.png"),
                os.path.join(out, "accuracy_matrices_dataset_id_order.png")):
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_test_scripts_score_existing_predictions(pipeline, tiny_t5, bench_dir):
    out, order, summary = pipeline
    env = {**os.environ, "PYTHON": sys.executable, "BASE_MODEL": tiny_t5, "GPU": "cpu", "DATA_DIR": bench_dir,
           "OUTPUT_PATH": out, "DATASET_IDS": order}
    for script, key in (("run_test_KIF_t5lora_avgPer.sh", "OP"), ("run_test_KIF_t5lora_bwt.sh", "BWT")):
        p = subprocess.run(["bash", os.path.join(ROOT, "scripts", script), "--max_length=12"], env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        assert f"{key}: {summary['RKIF'][key]:.4f}" in p.stdout
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_test_KIF_t5lora_avgPer.sh")],
                       env={**env, "METHOD": "Replay"}, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "the adapter after task 2 (food) is missing" in p.stderr


def test_eval_errors_exit_2(pipeline, tiny_t5, bench_dir, tmp_path, capsys):
    out, order, _ = pipeline
    with pytest.raises(SystemExit) as e:
        eval_avgperf_main([f"--base_model={tiny_t5}", f"--dataset_id={order}", "--method_name=Replay",
                           f"--data_dir={bench_dir}", f"--output_path={out}"])
    assert e.value.code == 2 and "prediction file not found" in capsys.readouterr().err
    bad = tmp_path / "old_avgPerf"
    bad.mkdir()
    for i, t in enumerate(TASKS):  # released format, the last file cut short
        with open(os.path.join(bench_dir, "test", f"{t}_T5.json")) as f:
            recs = json.load(f)
        keep = recs if i < 2 else recs[:5]
        (bad / f"{i}-{t}.txt").write_text("".join(f"{r['id']}|||{r['output']}|||['{r['output']}']\n" for r in keep))
    with pytest.raises(SystemExit) as e:
        eval_avgperf_main([f"--dataset_id={order}", f"--data_dir={bench_dir}", f"--pred_dir={bad}"])
    assert "2-food.txt: incomplete, 5 of 8" in capsys.readouterr().err
    (bad / "2-food.txt").unlink()
    with open(os.path.join(bench_dir, "test", "food_T5.json")) as f:
        recs = json.load(f)
    (bad / "2-food.txt").write_text("".join(f"{r['id']}|||{r['output']}|||['wrong']\n" for r in recs))
    eval_avgperf_main([f"--dataset_id={order}", f"--data_dir={bench_dir}", f"--pred_dir={bad}"])
    assert "OP: 0.6667" in capsys.readouterr().out


def test_pipeline_rejects_unknown_flags_and_methods(tiny_t5, bench_dir, tmp_path, capsys):
    for flag, message in (("--methods=RKIF,Foo", "unknown method 'Foo'"),
                          ("--num_epoch=3", "unknown flag --num_epoch (did you mean --num_epochs?)"),
                          ("--cutoff_len=64", "unknown flag(s) ['cutoff_len']: not a pipeline flag nor one of the t5")):
        with pytest.raises(SystemExit) as e:
            pipeline_main([f"--base_model={tiny_t5}", f"--dataset_id={bench_dir}/order.json", f"--data_dir={bench_dir}",
                           f"--output_path={tmp_path / 'o'}", flag])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_the_pipeline_hands_precision_to_training_and_refuses_flags_it_sets(tiny_t5, bench_dir, tmp_path):
    """--precision is the training precision, with --train_only (the training grids) or without (bf16 needs a
    GPU, refused here before anything loads; generation's is --gen_precision), and flags the pipeline sets per
    task are refused."""
    from rkif.errors import InputError

    order = os.path.join(bench_dir, "order.json")
    common = dict(base_model=tiny_t5, dataset_id=order, data_dir=bench_dir, output_path=str(tmp_path / "out"),
                  train_only=True)
    for train_only in (True, False):
        with pytest.raises(InputError, match="--precision bf16 needs a GPU"):
            run_order(precision="bf16", **{**common, "train_only": train_only})
    assert not (tmp_path / "out").exists()
    for flag, value in (("method_name", "SeqLoRA"), ("task_id", 1)):
        with pytest.raises(InputError, match=f"--{flag}: the pipeline sets it for every task"):
            run_order(**common, **{flag: value})
    assert not os.path.exists(tmp_path / "out" / f"{os.path.basename(tiny_t5)}lora_RKIF_dataset_id_order" / "0-weather"
                              / "adapter_model.bin")

