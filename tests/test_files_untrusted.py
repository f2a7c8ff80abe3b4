"""Files read back from disk never run code: crafted ewc_state.pt, kif_state_0.pt, rng_state.pth and
adapter_model.bin are refused (exit 2, nothing run), with real files and real processes."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import cli_args
from rkif.errors import InputError
from rkif.plain_data import NotPlainDataError, load_plain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "src", "finetune_KIF_t5lora.py")


class Payload:
    """Unpickling this runs `touch marker`: what a crafted checkpoint file can do to torch.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def craft(path, marker, like=None):
    """Overwrite path with a pickle that holds the payload (inside the structure of ``like``)."""
    torch.save({**(like or {}), "payload": Payload(marker)}, path)


def train(args, **kw):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          **kw)


def test_load_plain_takes_what_the_project_writes_and_refuses_code(tmp_path):
    import random

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state(),
             "nested": {"list": [1, 2.5, "x", None], "t": torch.ones(2)}}
    torch.save(state, tmp_path / "plain.pth")
    back = load_plain(str(tmp_path / "plain.pth"))
    assert back["numpy"][0] == "MT19937" and np.array_equal(back["numpy"][1], state["numpy"][1])
    assert torch.equal(back["cpu"], state["cpu"]) and back["nested"]["list"] == [1, 2.5, "x", None]
    marker = tmp_path / "marker"
    craft(tmp_path / "evil.pt", marker)
    with pytest.raises(NotPlainDataError, match=r"evil.pt holds something other than plain data .*it names "
                                                r"posix.system"):
        load_plain(str(tmp_path / "evil.pt"))
    assert not marker.exists()
    # what an unrestricted torch.load would have done with the same file
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_a_truncated_file_is_an_error_naming_it(tmp_path):
    torch.save({"t": torch.ones(1000)}, tmp_path / "state.pt")
    data = (tmp_path / "state.pt").read_bytes()
    (tmp_path / "state.pt").write_bytes(data[:len(data) // 2])  # a copy cut short
    with pytest.raises(InputError, match=r"state.pt cannot be read .*truncated or corrupt"):
        load_plain(str(tmp_path / "state.pt"))


@pytest.fixture(scope="module")
def trained(tiny_t5, bench_dir, tmp_path_factory):
    """Tasks 0 and 1 of RKIF (checkpoints kept), and task 0 of EWC."""
    out = str(tmp_path_factory.mktemp("trained"))
    for method, tasks in (("RKIF", (0, 1)), ("EWC", (0,))):
        for t in tasks:
            p = train(cli_args(tiny_t5, bench_dir, out, t, method=method, val_set_size=0, num_epochs=2))
            assert p.returncode == 0, p.stderr[-2000:]
    return out


def run_dir(out, tiny_t5, method):
    return os.path.join(out, f"{os.path.basename(tiny_t5)}lora_{method}_dataset_id_order")


def refused(p, marker, path):
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and err[-1].startswith("error: ")
    assert f"{path} holds something other than plain data" in err[-1] and "posix.system" in err[-1]
    assert not os.path.exists(marker)


def test_crafted_ewc_state_and_adapter_are_refused_before_any_work(trained, tiny_t5, bench_dir, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(trained, out)
    marker = str(tmp_path / "marker")
    previous = os.path.join(run_dir(out, tiny_t5, "EWC"), "0-weather")
    for name in ("ewc_state.pt", "adapter_model.bin"):
        path = os.path.join(previous, name)
        saved = path + ".orig"
        shutil.copy(path, saved)
        craft(path, marker, like=load_plain(saved))
        p = train(cli_args(tiny_t5, bench_dir, out, 1, method="EWC", val_set_size=0))
        refused(p, marker, path)
        assert not os.path.exists(os.path.join(run_dir(out, tiny_t5, "EWC"), "1-sport"))
        os.replace(saved, path)


@pytest.mark.parametrize("name, resume", [("kif_state_0.pt", "path"), ("rng_state.pth", "auto"),
                                          ("optimizer.pt", "path")])
def test_crafted_checkpoint_files_are_refused_on_resume(name, resume, trained, tiny_t5, bench_dir, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(trained, out)
    marker = str(tmp_path / "marker")
    task = os.path.join(run_dir(out, tiny_t5, "RKIF"), "1-sport")
    checkpoint = os.path.join(task, sorted((d for d in os.listdir(task) if d.startswith("checkpoint-")),
                                           key=lambda d: int(d.split("-")[1]))[-1])
    os.remove(os.path.join(task, "adapter_model.bin"))  # unfinished, as a kill before the final save leaves it
    path = os.path.join(checkpoint, name)
    craft(path, marker, like=load_plain(path) if name != "optimizer.pt" else None)
    # the attacker also fixes the completion marker's recorded size, so the checkpoint still counts as complete
    with open(os.path.join(checkpoint, "checkpoint_complete.json")) as f:
        complete = json.load(f)
    complete["files"][name] = os.path.getsize(path)
    with open(os.path.join(checkpoint, "checkpoint_complete.json"), "w") as f:
        json.dump(complete, f)
    before = sorted(os.listdir(task))
    p = train(cli_args(tiny_t5, bench_dir, out, 1, val_set_size=0,
                       resume_from_checkpoint=checkpoint if resume == "path" else resume))
    refused(p, marker, path)
    assert sorted(os.listdir(task)) == before
