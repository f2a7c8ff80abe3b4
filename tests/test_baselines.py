"""The baselines of the harness: O-LoRA / IncLoRA branches and penalties, EWC, MTL, several seeds."""

import json
import math
import os

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq

from conftest import TASKS, cli_args
from rkif.commands import entry_points
from rkif.run_folders import adapter_dir, run_dir
from rkif.task_plan import plan_task
from rkif.methods import olora
from rkif.seq2seq import tokenize_seq2seq

main = entry_points.train_t5


def lora_t5(tiny_t5, r):
    return get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5),
                          LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM"))


def test_orthogonality_and_l2_penalties_by_hand(tiny_t5):
    model = lora_t5(tiny_t5, 4)
    modules = olora.lora_modules(model)
    assert len(modules) == 12  # q and v of 2 encoder self-attention, 2 decoder self- and 2 cross-attention layers
    rows = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 0.0], [1.0, -1.0]])  # old: rows 0-1, new: rows 2-3
    with torch.no_grad():
        for _, m in modules:
            a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
            a.zero_()
            a[:, :2] = rows
            b.zero_()
            b[0, 2] = 2.0  # the new branch's B: one entry
            b[1, 0] = 5.0  # an old branch entry, outside the L2 term
    # A_old A_new^T = [[1*3 + 2*0, 1*1 + 2*(-1)], [0*3 + 1*0, 0*1 + 1*(-1)]] = [[3, -1], [0, -1]]: |.|.sum() = 5
    assert olora.orthogonality_penalty(model, 2).item() == pytest.approx(12 * 5)
    # ||A_new|| = sqrt(9 + 1 + 1), ||B_new|| = 2
    assert olora.l2_penalty(model, 2).item() == pytest.approx(12 * (math.sqrt(11) + 2))
    penalty = olora.branch_penalty(2, lambda_orth=0.5, lambda_l2=0.1)(model)
    assert penalty.item() == pytest.approx(0.5 * 60 + 0.1 * 12 * (math.sqrt(11) + 2))
    assert olora.branch_penalty(0, 0.5, 0.0)(model) == 0.0  # task 0: no earlier branch, no L2 weight


def run_cli(tiny_t5, bench_dir, out, method, tasks=(0, 1), **extra):
    for t in tasks:
        main(cli_args(tiny_t5, bench_dir, out, t, method, val_set_size=0, **extra))
    return [adapter_dir(out, tiny_t5, method, "order", t, TASKS[t]) for t in range(3)]


def test_olora_freezes_the_earlier_branch_and_saves_a_standard_rank_2r_adapter(tiny_t5, bench_dir, tmp_path):
    from rkif.backbones import T5
    from rkif.methods import get_method
    from rkif.settings import EWCSettings, KIFConfig, OLoRASettings, RunSettings, Settings, TrainingSettings
    from rkif.training import BatchShape, LoRAShape, train_and_save

    out = str(tmp_path / "out")
    first, second, _ = run_cli(tiny_t5, bench_dir, out, "OLoRA", tasks=(0,))
    # task 1 in process, to compare the model in memory with what is saved
    plan = plan_task(method_name="OLoRA", dataset_id=os.path.join(bench_dir, "order.json"), task_id=1,
                     data_dir=bench_dir, output_path=out, base_model=tiny_t5, memory_data_ratio=25, val_set_size=0,
                     seed=42)
    tok = AutoTokenizer.from_pretrained(tiny_t5)
    model, extra_loss = get_method("OLoRA").build(
        AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), plan, LoRAShape(8, 32, 0.05, ["q", "v"], "SEQ_2_SEQ_LM"),
        Settings([OLoRASettings(lambda_orth=0.5, lambda_l2=0.0)]))
    collate = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, padding=True, return_tensors="pt")
    trainer = train_and_save(plan=plan, model=model, features=lambda rs: tokenize_seq2seq(rs, tok, 128, 16),
                             data_collator=collate, settings=Settings([
                                 RunSettings(method_name="OLoRA"), KIFConfig(), EWCSettings(),
                                 TrainingSettings(num_epochs=2, learning_rate=1e-2, warmup_steps=1,
                                                  lr_scheduler_type="linear", eval_steps=100, logging_steps=100)]),
                             batches=BatchShape(2, 2, 1), backbone=T5, resume_from_checkpoint=None, started=0.0,
                             extra_loss=extra_loss)
    old, new = torch.load(os.path.join(first, "adapter_model.bin")), torch.load(os.path.join(second,
                                                                                            "adapter_model.bin"))
    config = json.load(open(os.path.join(second, "adapter_config.json")))
    assert config["r"] == 16 and config["lora_alpha"] == 64  # rank r*(t+1), alpha*(t+1): each branch keeps alpha/r
    for k in old:
        if "lora_A" in k:
            assert torch.equal(new[k][:8], old[k]) and not torch.equal(new[k][8:], torch.zeros_like(new[k][8:]))
        else:
            assert torch.equal(new[k][:, :8], old[k]) and new[k][:, 8:].abs().sum() > 0
    # the saved adapter, loaded as any peft LoRA, gives the in-memory model's logits
    batch = collate(tokenize_seq2seq(json.load(open(os.path.join(bench_dir, "test", "sport_T5.json")))[:4], tok, 128,
                                     16))
    trainer.model.eval()
    loaded = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), second).eval()
    with torch.no_grad():
        a, b = trainer.model(**batch).logits, loaded(**batch).logits
    assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_incremental_lora_has_no_orthogonality_term(tiny_t5, bench_dir, tmp_path):
    out = str(tmp_path / "out")
    dirs = run_cli(tiny_t5, bench_dir, out, "IncLoRA")
    assert json.load(open(os.path.join(dirs[1], "adapter_config.json")))["r"] == 16
    info = json.load(open(os.path.join(dirs[1], "run_info.json")))
    assert info["settings"]["method_name"] == "IncLoRA" and info["previous_adapter"] == dirs[0]


def test_mtl_trains_once_on_the_union(tiny_t5, bench_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    order = os.path.join(bench_dir, "order.json")
    plan = plan_task(method_name="MTL", dataset_id=order, task_id=2, data_dir=bench_dir, output_path=out,
                     base_model=tiny_t5, memory_data_ratio=2, val_set_size=0, seed=42)
    counts = {t: len(json.load(open(os.path.join(bench_dir, "train", f"{t}_T5.json")))) for t in TASKS}
    assert len(plan.train) == sum(counts.values()) == 72 and plan.previous_adapter is None and not plan.memory
    assert sorted(r["input"] for r in plan.train) == sorted(
        r["input"] for t in TASKS for r in json.load(open(os.path.join(bench_dir, "train", f"{t}_T5.json"))))
    dirs = run_cli(tiny_t5, bench_dir, out, "MTL", tasks=(0, 1, 2))
    assert "MTL trains once, on all 3 tasks together, at --task_id 2; nothing to train for task 0" in \
        capsys.readouterr().out
    assert not os.path.exists(dirs[0]) and not os.path.exists(dirs[1])
    assert json.load(open(os.path.join(dirs[2], "run_info.json")))["num_train_examples"] == 72


def test_other_seeds_get_their_own_folders(tiny_t5, bench_dir, tmp_path):
    assert run_dir("o", "/m/t5-large", "RKIF", "4").endswith("t5-largelora_RKIF_dataset_id_4")
    assert run_dir("o", "/m/t5-large", "RKIF", "4", seed=7).endswith("t5-largelora_RKIF_dataset_id_4_seed7")
    out = str(tmp_path / "out")
    main(cli_args(tiny_t5, bench_dir, out, 0, "SeqLoRA", val_set_size=0, seed=7))
    assert os.listdir(out) == [f"{os.path.basename(tiny_t5)}lora_SeqLoRA_dataset_id_order_seed7"]


def test_pipeline_runs_the_baselines_and_mtl_has_no_bwt(tiny_t5, bench_dir, tmp_path):
    import csv

    from rkif.pipeline import run_order

    out = str(tmp_path / "out")
    summary = run_order(base_model=tiny_t5, dataset_id=os.path.join(bench_dir, "order.json"), methods="OLoRA,LwF,TaSL,MTL",
                        data_dir=bench_dir, output_path=out, matrix=True, gen_batch_size=8, num_epochs=1,
                        batch_size=4, micro_batch_size=2, val_set_size=0, logging_steps=100, max_input_length=128,
                        max_length=8)
    assert len(summary["OLoRA"]["R"]) == 3 and "R" not in summary["MTL"]
    assert all(len(summary[m]["R"]) == 3 and summary[m]["BWT"] is not None for m in ("LwF", "TaSL"))
    assert summary["MTL"]["BWT"] is None and 0 <= summary["MTL"]["OP"] <= 1
    rows = {r["method"]: r for r in csv.DictReader(open(os.path.join(out, "summary_dataset_id_order.csv")))}
    assert rows["MTL"]["BWT"] == "" and rows["MTL"]["forgetting"] == "" and rows["OLoRA"]["BWT"] != ""
    with pytest.raises(SystemExit) as e:  # and the bwt scripts say why
        from rkif.commands import entry_points
        eval_bwt_main = entry_points.eval_bwt
        eval_bwt_main([f"--base_model={tiny_t5}", f"--dataset_id={bench_dir}/order.json", "--method_name=MTL",
                       f"--data_dir={bench_dir}", f"--output_path={out}"])
    assert e.value.code == 2
