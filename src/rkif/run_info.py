"""run_info.json: what a task was trained with, on what, by which code (the provenance of an adapter)."""

import importlib.metadata
import json
import os
import platform
import subprocess
import time

import torch


def library_versions():
    """The installed versions, read from the packages' metadata (importing datasets and accelerate to read
    their __version__ costs a second)."""
    return {"python": platform.python_version(),
            **{name: importlib.metadata.version(name) for name in ("torch", "transformers", "peft", "datasets",
                                                                  "accelerate")}}


def git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def device_name():
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def run_info_json(settings, *, world_size, micro_batch_size, gradient_accumulation_steps, started, extra):
    info = {
        "settings": settings,
        "versions": library_versions(),
        "device": device_name(),
        "world_size": world_size,
        "micro_batch_size": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "effective_batch_size": micro_batch_size * gradient_accumulation_steps * world_size,
        "git_commit": git_commit(),
        "wall_time_s": round(time.time() - started, 3),
        **extra,
    }
    return json.dumps(info, indent=2, default=str)
