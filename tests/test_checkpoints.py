"""rkif.checkpoints: the completion marker, the newest complete checkpoint, rotation (on temporary folders),
and exact resumption of a task from an adapter checkpoint (in the real Trainer)."""

import json
import os
import types

import pytest
import torch
import transformers

from rkif.adapters import lora_parameters
from rkif.checkpoints import (COMPLETE, AdapterCheckpointMixin, checkpoint_folders, incomplete_reason,
                              newest_complete_checkpoint, required_files, resume_hint, write_complete_marker)

from trainers import StopAt, make_trainer


def write_checkpoint(folder, files, complete=True, step=1):
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    if complete:
        write_complete_marker(folder, step, list(files))
    return str(folder)


def test_required_files_name_every_rank():
    assert required_files(1) == ["adapter_model.bin", "optimizer.pt", "scheduler.pt", "trainer_state.json",
                                 "rng_state.pth"]
    assert required_files(2, ["kif_state_{}.pt"])[-4:] == ["rng_state_0.pth", "rng_state_1.pth", "kif_state_0.pt",
                                                          "kif_state_1.pt"]


def test_marker_records_every_file_and_size_and_then_detects_damage(tmp_path):
    ck = write_checkpoint(tmp_path / "checkpoint-4", {"a.bin": "12345", "b.json": "{}"}, step=4)
    marker = json.load(open(os.path.join(ck, COMPLETE)))
    assert marker == {"global_step": 4, "world_size": 1, "files": {"a.bin": 5, "b.json": 2}}
    assert not os.path.exists(os.path.join(ck, COMPLETE + ".tmp"))
    assert incomplete_reason(ck) is None
    with open(os.path.join(ck, "a.bin"), "w") as f:
        f.write("12")
    assert incomplete_reason(ck) == "a.bin has 2 bytes, 5 were written"
    with open(os.path.join(ck, "a.bin"), "w") as f:
        f.write("12345")
    os.remove(os.path.join(ck, "b.json"))
    assert incomplete_reason(ck) == "b.json is missing"
    os.remove(os.path.join(ck, COMPLETE))
    assert incomplete_reason(ck) == f"no {COMPLETE} (it was not finished)"


def test_marker_is_refused_while_a_required_file_is_missing(tmp_path):
    ck = write_checkpoint(tmp_path / "checkpoint-1", {"a.bin": "x"}, complete=False)
    with pytest.raises(RuntimeError, match=r"not marked complete, \['optimizer.pt'\] were not written"):
        write_complete_marker(ck, 1, ["a.bin", "optimizer.pt"])
    assert not os.path.exists(os.path.join(ck, COMPLETE))


def test_checkpoint_folders_by_step_not_by_name(tmp_path):
    for name in ("checkpoint-10", "checkpoint-9", "checkpoint-100", "checkpoint-x", "other"):
        os.makedirs(tmp_path / name)
    (tmp_path / "checkpoint-11").write_text("a file, not a folder")
    assert [os.path.basename(p) for p in checkpoint_folders(str(tmp_path))] == ["checkpoint-9", "checkpoint-10",
                                                                                "checkpoint-100"]
    assert checkpoint_folders(str(tmp_path / "absent")) == []


def test_newest_complete_checkpoint_skips_newer_incomplete_ones(tmp_path):
    assert newest_complete_checkpoint(str(tmp_path)) == (None, [])
    assert "no complete checkpoint yet: a rerun starts the task at step 0" in resume_hint(str(tmp_path))
    five = write_checkpoint(tmp_path / "checkpoint-5", {"a": "1"}, step=5)
    ten = write_checkpoint(tmp_path / "checkpoint-10", {"a": "1"}, step=10)
    fifteen = write_checkpoint(tmp_path / "checkpoint-15", {"a": "1"}, complete=False)
    assert newest_complete_checkpoint(str(tmp_path)) == (ten, [(fifteen, f"no {COMPLETE} (it was not finished)")])
    assert f"resumes from {ten}" in resume_hint(str(tmp_path))
    os.remove(os.path.join(ten, "a"))
    path, skipped = newest_complete_checkpoint(str(tmp_path))
    assert path == five and [p for p, _ in skipped] == [fifteen, ten]


class Rotating(AdapterCheckpointMixin, transformers.Trainer):
    pass


def test_rotation_removes_incomplete_checkpoints_first_and_waits_while_deferred(tmp_path):
    trainer = object.__new__(Rotating)  # a Trainer that was never set up: only the rotation is exercised
    trainer.args = types.SimpleNamespace(save_total_limit=2, output_dir=str(tmp_path))
    trainer.state = types.SimpleNamespace(best_model_checkpoint=None)
    trainer._defer_rotation = True
    oldest, older, newest = (write_checkpoint(tmp_path / f"checkpoint-{n}", {"a": "1"}) for n in (5, 10, 15))
    broken = write_checkpoint(tmp_path / "checkpoint-20", {"a": "1"}, complete=False)
    trainer._rotate_checkpoints(use_mtime=False, output_dir=str(tmp_path))
    assert all(os.path.isdir(p) for p in (oldest, older, newest, broken))  # deferred until the new one is complete
    trainer._defer_rotation = False
    trainer._rotate_checkpoints(use_mtime=False, output_dir=str(tmp_path))
    # the incomplete one first, then the stack's stock rotation keeps the newest save_total_limit of the rest
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10", "checkpoint-15"]


def test_plain_lora_task_resumes_from_adapter_checkpoint_to_the_same_weights(tiny_t5, bench_dir, tmp_path):
    whole = make_trainer(tiny_t5, bench_dir, tmp_path / "whole", memory=False, epochs=2)
    whole.train()
    cut = make_trainer(tiny_t5, bench_dir, tmp_path / "cut", memory=False, epochs=2, save_steps=4,
                       callbacks=[StopAt(8)])
    cut.train()
    assert cut.state.global_step == 8
    assert sorted(os.listdir(tmp_path / "cut")) == ["checkpoint-4", "checkpoint-8"]
    resumed = make_trainer(tiny_t5, bench_dir, tmp_path / "cut", memory=False, epochs=2, save_steps=4)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == whole.state.global_step == 24
    a, b = lora_parameters(whole.model), lora_parameters(resumed.model)
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-6), n


@pytest.mark.parametrize("outer_optimizer", ["shared", "separate"])
def test_rkif_task_killed_mid_cycle_resumes_to_the_same_adapter(tiny_t5, bench_dir, tmp_path, outer_optimizer):
    kw = dict(K=3, M=2, epochs=2, outer_optimizer=outer_optimizer, warmup=2)
    whole = make_trainer(tiny_t5, bench_dir, tmp_path / "whole", **kw)
    whole.train()
    cut = make_trainer(tiny_t5, bench_dir, tmp_path / "cut", save_steps=5, callbacks=[StopAt(13)], **kw)
    cut.train()
    assert cut.state.global_step == 13
    assert os.path.isfile(tmp_path / "cut" / "checkpoint-10" / "kif_state_0.pt")
    # resumes from checkpoint-10: step 10 is one step into a K=3 cycle (anchor at the fusion of step 9)
    resumed = make_trainer(tiny_t5, bench_dir, tmp_path / "cut", save_steps=5, **kw)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == whole.state.global_step == 24
    assert [h["global_step"] for h in resumed.kif_history] == [h["global_step"] for h in whole.kif_history]
    assert [h["memory_indices"] for h in resumed.kif_history] == [h["memory_indices"] for h in whole.kif_history]
    a, b = lora_parameters(whole.model), lora_parameters(resumed.model)
    for n in a:
        assert torch.equal(a[n], b[n]), n
    for n, t in whole.inner_tracker.scores().items():
        assert torch.equal(t, resumed.inner_tracker.scores()[n])


def test_resume_refuses_a_checkpoint_without_kif_state(tiny_t5, bench_dir, tmp_path):
    cut = make_trainer(tiny_t5, bench_dir, tmp_path / "run", K=3, save_steps=5, callbacks=[StopAt(6)])
    cut.train()
    os.remove(tmp_path / "run" / "checkpoint-5" / "kif_state_0.pt")
    resumed = make_trainer(tiny_t5, bench_dir, tmp_path / "run", K=3, save_steps=5)
    with pytest.raises(FileNotFoundError, match="kif_state_0.pt is missing"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-5"))



def test_a_resume_on_another_number_of_ranks_is_refused_before_any_model_loads(tiny_t5, bench_dir, tmp_path,
                                                                                monkeypatch, capsys):
    """From 1 rank to N every rank loaded the model, then failed on a missing rng_state_{r}.pth; from N to
    fewer the resume went on silently without the RNG states. Now: one error line, exit 2, nothing loaded."""
    from conftest import TASKS, cli_args
    from rkif.commands import entry_points
    finetune_t5_main = entry_points.train_t5
    from rkif.run_folders import adapter_dir
    from rkif.training import resolve_resume

    task_dir = adapter_dir(str(tmp_path / "out"), tiny_t5, "SeqLoRA", "order", 0, TASKS[0])
    two = os.path.join(task_dir, "checkpoint-2")
    os.makedirs(two)
    for name in ("adapter_model.bin", "rng_state_0.pth", "rng_state_1.pth"):
        torch.save({}, os.path.join(two, name))
    write_complete_marker(two, 2, ["adapter_model.bin"], world_size=2)  # as 2 ranks write it
    marker = os.path.join(two, COMPLETE)
    assert resolve_resume(True, task_dir, world_size=2) == two
    for resume in (True, "auto", two):
        with pytest.raises(Exception, match=r"saved by 2 rank\(s\) and this run has 1; resume it on 2"):
            resolve_resume(resume, task_dir, world_size=1)
    # a marker written before the world size was recorded: read from the RNG files
    legacy = json.load(open(marker))
    del legacy["world_size"]
    json.dump(legacy, open(marker, "w"))
    with pytest.raises(Exception, match=r"saved by 2 rank\(s\) and this run has 1"):
        resolve_resume(True, task_dir, world_size=1)
    one = write_checkpoint(os.path.join(task_dir, "checkpoint-1"), {"rng_state.pth": "x"})
    with pytest.raises(Exception, match=r"saved by 1 rank\(s\) and this run has 4; resume it on 1"):
        resolve_resume(one, task_dir, world_size=4)

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(transformers.AutoModelForSeq2SeqLM, "from_pretrained", no_load)
    with pytest.raises(SystemExit) as e:
        finetune_t5_main(cli_args(tiny_t5, bench_dir, str(tmp_path / "out"), 0, "SeqLoRA", val_set_size=0,
                                  resume_from_checkpoint=True))
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "saved by 2 rank(s) and this run has 1" in errors[0]
