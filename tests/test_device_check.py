"""scripts/device_check.py in its --tiny form: every section on CPU."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_device_check_runs_every_section_on_cpu_and_keeps_a_failed_ones_record(tmp_path):
    """--tiny: the GPU check's sections on CPU; one is failed on purpose, the others still run and the
    JSON (rewritten after every section) records each."""
    out = tmp_path / "check"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "device_check.py"), "--tiny", "--out", str(out),
                        "--steps", "4", "--gen_examples", "6", "--gen_batch_size", "3", "--gen_max_length", "12",
                        "--fail_section", "t5_resume", "--ddp_ranks", "2"],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 1, p.stderr[-3000:]  # a section failed
    report = json.load(open(out / "device_check.json"))
    assert report["tiny"] is True and report["versions"]["device"] == "cpu"
    sections = report["sections"]
    assert list(sections) == ["t5_methods", "t5_precisions", "t5_resume", "t5_generation", "t5_ddp", "llama_methods",
                              "llama_precisions", "llama_resume", "llama_generation", "llama_ddp"]
    assert sections["t5_resume"]["ok"] is False and "forced failure" in sections["t5_resume"]["error"]
    assert report["settings"]["layers"] == {"t5": 2, "llama": 2}
    ddp = sections["t5_ddp"]
    assert ddp["ok"] is True and ddp["backend"] == "gloo" and ddp["ranks"] == 2 and ddp["fusions"] == 2, ddp
    ddp = sections["llama_ddp"]  # a penalty method under DDP with LLaMA's gradient checkpointing
    assert ddp["ok"] is True and ddp["method"] == "EWC" and ddp["gradient_checkpointing"] is True, ddp
    for backbone in ("t5", "llama"):
        methods = sections[f"{backbone}_methods"]
        assert methods["ok"] is True, methods
        for name in ("RKIF", "SeqLoRA", "Replay", "OLoRA", "IncLoRA", "EWC", "MTL"):
            assert methods[name]["ok"] is True and methods[name]["steps"] == 4
        assert methods["RKIF"]["fusions"] == 2 and methods["SeqLoRA"]["fusions"] == 0
        assert methods["RKIF"]["outer_batch_used"] == 8  # the memory holds a whole outer batch
        assert methods["ratio_rkif_over_seqlora"] == pytest.approx(methods["RKIF"]["seconds_per_step"] /
                                                                   methods["SeqLoRA"]["seconds_per_step"])
        last = methods["RKIF"]["last_fusion"]
        assert sum(last[k] for k in ("share_inner_only", "share_outer_only", "share_both", "share_neither")) \
            == pytest.approx(1.0)
        variants = sections[f"{backbone}_precisions"]
        assert variants["ok"] is True and variants["separate_outer_optimizer"]["fusions"] == 2
        g = sections[f"{backbone}_generation"]
        assert g["ok"] is True and g["examples"] == 6 and g["identical_outputs"] is True
        assert g["precision"] == "auto" and g["other_precision"] == "bf16" and "other_agreement_with_default" in g
    assert sections["llama_precisions"]["outer_micro_batch_size"]["fusions"] == 2
    resumed = sections["llama_resume"]
    assert resumed["ok"] is True and resumed["resumed_from_step"] == 2 and resumed["bitwise"] is True
    assert "t5_resume                FAILED" in p.stdout and "RKIF / SeqLoRA step time" in p.stdout


def load_device_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("device_check", os.path.join(ROOT, "scripts", "device_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_section_cut_short_keeps_what_it_finished(tmp_path):
    import time

    check = load_device_check()
    report = {"sections": {}}

    def two_methods_then_a_hang(figures):
        figures["RKIF"] = {"ok": True, "seconds_per_step": 1.5}
        figures["SeqLoRA"] = {"ok": True, "seconds_per_step": 1.0}
        time.sleep(30)
        return figures

    entry = check.run_section(report, "t5_methods", two_methods_then_a_hang, 1, str(tmp_path / "r.json"))
    assert entry["ok"] is False and "ran out of its 1 s" in entry["error"] and entry["seconds"] < 10
    assert entry["RKIF"]["seconds_per_step"] == 1.5 and entry["SeqLoRA"]["ok"] is True
    assert json.load(open(tmp_path / "r.json"))["sections"]["t5_methods"]["RKIF"]["seconds_per_step"] == 1.5


def test_a_timed_out_torchrun_leaves_no_rank_running(tmp_path):
    """The launcher and the 'ranks' it started die together, a rank in a session of its own included."""
    import time

    check = load_device_check()
    pids = tmp_path / "pids"
    # like torchrun's ranks, one starts a session of its own: a kill of the launcher's group misses it
    script = f"setsid sleep 60 & echo $! >> {pids}; sleep 60 & echo $! >> {pids}; wait"
    with pytest.raises(subprocess.TimeoutExpired):
        check.run_process_group(["sh", "-c", script], dict(os.environ), timeout=2)
    children = [int(x) for x in pids.read_text().split()]
    assert len(children) == 2

    def running(pid):  # gone, or a zombie waiting for whoever adopted it to reap it
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.time() + 5
    while any(running(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in children)


def test_the_run_stops_at_its_deadline_and_records_what_it_skipped(tmp_path):
    out = tmp_path / "check"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "device_check.py"), "--tiny", "--out", str(out),
                        "--steps", "4", "--skip_llama", "--deadline_seconds", "6"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    report = json.load(open(out / "device_check.json"))
    sections = report["sections"]
    assert report["wall_seconds"] < 60 and p.returncode == 1, p.stderr[-2000:]
    first = sections["t5_methods"]
    assert first["ok"] is False and "ran out of its" in first["error"]
    skipped = [name for name, s in sections.items() if s["ok"] is None and "deadline" in s.get("skipped", "")]
    assert "t5_generation" in skipped
