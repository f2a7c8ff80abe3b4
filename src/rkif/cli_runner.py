"""The command-line runner: every script's flags are checked before anything runs.

fire only complains about an argument it could not use after the function has returned,
so a misspelled flag used to train a whole task with the default value. ``run`` checks the
command line against the function's signature first, the way fire will read it (``--name
value``, ``--name=value``, ``--name`` alone for True, ``--noname`` for False, hyphens for
underscores, ``-x`` for the one parameter starting with x, fire's own flags after ``--``).
"""

import difflib
import functools
import inspect
import os
import re
import sys

import fire
from tqdm import tqdm

from .errors import InputError

_NUMBER = re.compile(r"^-\d*\.?\d+(e[-+]?\d+)?$", re.IGNORECASE)


def exit_on_input_error(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except InputError as e:
        _close_progress_bars()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _close_progress_bars():
    """An error raised inside a loop leaves its tqdm bar open, to be redrawn at exit below the message;
    closed first, the `error:` line is the last one printed."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _is_flag(token):
    return token.startswith("-") and token != "-" and not _NUMBER.match(token)


def check_argv(fn, argv, extra_flags=()):
    """Raise InputError for a flag ``fn`` does not take (with the closest name) or a surplus positional."""
    params = inspect.signature(fn).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in params.values())
    names = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    known = set(names) | set(extra_flags)
    argv = list(argv)
    if "--" in argv:  # what follows is for fire itself (--help, --trace, ...)
        argv = argv[: argv.index("--")]
    named, positional, i = set(), [], 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not _is_flag(token):
            positional.append(token)
            continue
        body = token.lstrip("-")
        key, has_value = body.split("=", 1)[0].replace("-", "_"), "=" in body
        if key in ("help", "h"):
            continue
        if not token.startswith("--") and len(key) == 1:
            matches = [n for n in names if n.startswith(key)]
            if len(matches) != 1:
                raise InputError(f"unknown flag {token}: -{key} must name exactly one flag, it names {matches}")
            key = matches[0]
        if key not in known:
            if key.startswith("no") and key[2:] in known:  # --noflag: False
                named.add(key[2:])
                continue
            if extra_flags or not takes_kwargs:
                close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
                hint = f" (did you mean --{close[0]}?)" if close else f"; the flags are: --{', --'.join(names)}"
                raise InputError(f"unknown flag --{key}{hint}")
        named.add(key)
        if not has_value and i < len(argv) and not _is_flag(argv[i]):
            i += 1  # the flag's value
    # A bare word may fill only a parameter without a default (e.g. RAW_DIR): `--lora_target_modules q v`
    # would otherwise hand "v" to the first free setting and run with it.
    required = [n for n in names if n not in named and params[n].default is inspect.Parameter.empty
                and params[n].kind is not inspect.Parameter.KEYWORD_ONLY]
    if len(positional) > len(required) and not takes_varargs:
        raise InputError(f"unexpected argument {positional[len(required)]!r}: settings are given as --flag value "
                         "(see --help)")


def run(fn, argv=None, *, name=None, extra_flags=()):
    """fire.Fire(fn) after check_argv; an InputError anywhere prints `error: ...` and exits 2.

    extra_flags: names accepted besides fn's own, for a fn whose **kwargs are checked later.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    ours = argv[: argv.index("--")] if "--" in argv else argv
    if any(t in ("--help", "-h") for t in ours):
        # fire hands --help to a function with **kwargs as a flag; asked as fire's own flag, it shows the help
        argv = ["--", "--help"]
    exit_on_input_error(check_argv, fn, argv, extra_flags)
    result = fire.Fire(functools.wraps(fn)(lambda *a, **kw: exit_on_input_error(fn, *a, **kw)), command=argv,
                       name=name or os.path.basename(sys.argv[0]))
    leave_process_group()
    return result


def leave_process_group():
    """Under torchrun, each rank leaves its process group before the interpreter exits: left to the exit,
    gloo's threads can abort a rank whose work is done ("terminate called without an active exception",
    exit -6), and torchrun then reports the job failed. torch.distributed never imported: no group."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
