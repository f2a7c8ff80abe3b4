"""Bad input: a clear message naming what is wrong, exit status 2, and nothing written."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import cli_args
from rkif.commands import entry_points
main = entry_points.train_t5

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def data(bench_dir, tmp_path):
    d = str(tmp_path / "data")
    shutil.copytree(bench_dir, d)
    return d


def run_cli(capsys, args):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


# The table of bad flags and files, as real processes: test_flags.py.


def test_empty_memory_buffer_is_refused_before_writing(data, tiny_t5, tmp_path, capsys):
    out = str(tmp_path / "out")
    main(cli_args(tiny_t5, data, out, 0))
    capsys.readouterr()
    before = sorted(os.walk(out))
    code, err = run_cli(capsys, cli_args(tiny_t5, data, out, 1, memory_data_ratio=0))
    assert code == 2
    assert "--memory_data_ratio 0: the memory buffer of tasks ['weather'] is empty" in err
    assert sorted(os.walk(out)) == before


def test_real_process_exit_status_and_stderr(bench_dir, tiny_t5, tmp_path):
    out = str(tmp_path / "out")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "src", "finetune_KIF_t5lora.py"),
                           *cli_args(tiny_t5, bench_dir, out, 7)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: --task_id: 7 is out of range" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(out)
