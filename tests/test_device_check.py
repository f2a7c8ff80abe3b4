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
                        "--fail_section", "t5_resume"],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 1, p.stderr[-3000:]  # a section failed
    report = json.load(open(out / "device_check.json"))
    assert report["tiny"] is True and report["versions"]["device"] == "cpu"
    sections = report["sections"]
    assert list(sections) == ["t5_methods", "t5_precisions", "t5_resume", "t5_generation", "ddp", "llama_methods",
                              "llama_precisions", "llama_resume", "llama_generation"]
    assert sections["t5_resume"]["ok"] is False and "forced failure" in sections["t5_resume"]["error"]
    assert sections["ddp"]["ok"] is None and "needs two or more" in sections["ddp"]["skipped"]
    for backbone in ("t5", "llama"):
        methods = sections[f"{backbone}_methods"]
        assert methods["ok"] is True, methods
        for name in ("RKIF", "SeqLoRA", "Replay", "OLoRA", "IncLoRA", "EWC", "MTL"):
            assert methods[name]["ok"] is True and methods[name]["steps"] == 4
        assert methods["RKIF"]["fusions"] == 2 and methods["SeqLoRA"]["fusions"] == 0
        assert methods["ratio_rkif_over_seqlora"] == pytest.approx(methods["RKIF"]["seconds_per_step"] /
                                                                   methods["SeqLoRA"]["seconds_per_step"])
        last = methods["RKIF"]["last_fusion"]
        assert sum(last[k] for k in ("share_inner_only", "share_outer_only", "share_both", "share_neither")) \
            == pytest.approx(1.0)
        variants = sections[f"{backbone}_precisions"]
        assert variants["ok"] is True and variants["separate_outer_optimizer"]["fusions"] == 2
        g = sections[f"{backbone}_generation"]
        assert g["ok"] is True and g["examples"] == 6 and g["identical_outputs"] is True
        assert g["precision"] == "bf16" and "agreement_with_fp32" in g
    assert sections["llama_precisions"]["outer_micro_batch_size"]["fusions"] == 2
    resumed = sections["llama_resume"]
    assert resumed["ok"] is True and resumed["resumed_from_step"] == 2 and resumed["bitwise"] is True
    assert "t5_resume                FAILED" in p.stdout and "RKIF / SeqLoRA step time" in p.stdout
