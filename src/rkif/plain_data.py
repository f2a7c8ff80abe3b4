"""Loading .pt / .pth / .bin files as plain data only, never as code.

torch.load unpickles, and a pickle can name any Python callable and run it. Run folders travel
between people and clusters (adapters, EWC state, checkpoints to resume), so every such file is
read with ``weights_only=True``: tensors, numbers, strings, lists, tuples and dicts, plus the
numpy types that the numpy RNG state in the Trainer's rng_state.pth pickles through, and nothing
else. Everything this project and the Trainer write is of that kind.
"""

import os
import pickle
import re

import torch

from .compat import NUMPY_RNG_GLOBALS
from .errors import InputError


class NotPlainDataError(InputError):
    """A file that holds something other than plain data; it was not loaded."""


def load_plain(path, map_location="cpu"):
    """torch.load(path) restricted to plain data; anything else raises NotPlainDataError, unloaded."""
    try:
        with torch.serialization.safe_globals(NUMPY_RNG_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it names {found.group(1)}" if found else str(e).strip().splitlines()[-1]
        raise NotPlainDataError(
            f"{path} holds something other than plain data (tensors, numbers, strings, lists, dicts): {what}. "
            "It was not loaded, since loading it could run code; use files written by this project, or remove it "
            "and rerun the step that writes it") from None
    except (RuntimeError, EOFError) as e:  # a truncated or corrupt archive (a copy cut short, a full disk)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path} cannot be read ({reason}); it may be truncated or corrupt: copy it again, or "
                         "remove it and rerun the step that writes it") from None


def check_plain(paths):
    """Load each existing file of ``paths`` as plain data (and drop it): refuse a crafted file before any
    work starts, rather than halfway through."""
    for path in paths:
        if os.path.isfile(path):
            load_plain(path)
