"""Patch an installed transformers 4.28.1 for the classic Recurrent-KIF workflow, or revert it.

    python patches/rkif_patch.py apply   [--transformers_dir DIR] [--out DIR]
    python patches/rkif_patch.py revert  [--transformers_dir DIR]
    python patches/rkif_patch.py status  [--transformers_dir DIR]
    python patches/rkif_patch.py diff    [--transformers_dir DIR]

Two edits, nothing copied from transformers:
- training_args.py: TrainingArguments gains the fields inner_iterations and train_batch_size_outer;
- trainer.py: `Trainer` becomes a subclass of the original with the released keywords
  (train_dataset_memory, ipt_score, outer_lr, empty_inner_score_flag, empty_outer_score_flag,
  outer_iterations), running this project's loop (rkif.legacy.KeywordAPIMixin -> rkif.loop).
Both files are checked against the 4.28.1 checksums first; the originals are kept beside them
as *.rkif-orig and `revert` puts them back byte for byte. Applying twice changes nothing.
Without --transformers_dir the transformers found by this Python is patched (without importing it).
"""

import argparse
import difflib
import hashlib
import importlib.util
import os
import re
import shutil
import sys

VERSION = "4.28.1"
PRISTINE_SHA256 = {
    "trainer.py": "e868ac227f18408091825701dbd405dff9b48c86bfc9e519a23b0fa2fc68f57c",
    "training_args.py": "891dcbc053b564919dbf66b7574fbd60328f2cbfdb5573426c67dfb74b824929",
}
MARKER = "# --- Recurrent-KIF patch (rkif) ---"
BACKUP = ".rkif-orig"
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
FIELDS_ANCHOR = "    def __post_init__(self):\n"


def kif_config():
    """rkif's KIFConfig (the fields' defaults); the patched Trainer imports rkif, so applying needs it installed."""
    try:
        from rkif.settings import KIFConfig
    except ImportError:
        raise SystemExit(f"error: the rkif package is not installed for this Python ({sys.executable}); install "
                         f"it first: {sys.executable} -m pip install -e {ROOT}") from None
    return KIFConfig


def fields_block():
    KIFConfig = kif_config()
    return f'''    {MARKER}
    inner_iterations: int = field(
        default={KIFConfig.inner_iterations}, metadata={{"help": "Recurrent-KIF: fuse the inner and outer updates every K optimizer steps."}}
    )
    train_batch_size_outer: int = field(
        default={KIFConfig.train_batch_size_outer}, metadata={{"help": "Recurrent-KIF: batch size of the outer (memory) steps."}}
    )

'''


TRAINER_BLOCK = f'''

{MARKER}
# The released keyword API (train_dataset_memory=, ipt_score=, outer_lr=, empty_inner_score_flag=,
# empty_outer_score_flag=, outer_iterations=) on the Recurrent-KIF package's loop. Revert with
# `python patches/rkif_patch.py revert`.
def _rkif_keyword_trainer(original):
    try:
        from rkif.legacy import KeywordAPIMixin
    except ImportError as e:
        logger.warning(f"Recurrent-KIF keywords unavailable, the rkif package is not importable ({{e}}): "
                       f"pip install -e {ROOT!r}")
        return original

    class Trainer(KeywordAPIMixin, original):
        rkif_original_trainer = original

    Trainer.__doc__, Trainer.__qualname__, Trainer.__module__ = original.__doc__, "Trainer", original.__module__
    return Trainer


Trainer = _rkif_keyword_trainer(Trainer)
'''


def patched_text(name, text):
    if name == "training_args.py":
        if text.count(FIELDS_ANCHOR) != 1:
            raise SystemExit(f"error: {name}: the insertion point was not found exactly once")
        return text.replace(FIELDS_ANCHOR, fields_block() + FIELDS_ANCHOR)
    return text + TRAINER_BLOCK


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def write_atomically(path, text):
    tmp = path + ".rkif-tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    if os.path.exists(path):
        shutil.copymode(path, tmp)
    os.replace(tmp, path)


def find_transformers(explicit):
    if explicit:
        folder = explicit
    else:
        spec = importlib.util.find_spec("transformers")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("error: transformers is not installed for this Python; pass --transformers_dir")
        folder = list(spec.submodule_search_locations)[0]
    init = os.path.join(folder, "__init__.py")
    if not os.path.isfile(init):
        raise SystemExit(f"error: {folder} is not a transformers package folder (no __init__.py)")
    found = re.search(r'^__version__ = "([^"]+)"', read(init), re.M)
    version = found.group(1) if found else "unknown"
    if version != VERSION:
        raise SystemExit(f"error: {folder} holds transformers {version}; this patch is for transformers {VERSION} only, "
                         f"the reproduction stack (make install, or pip install transformers=={VERSION}). On the current "
                         "stack (transformers 5.x) no patch is needed or possible: the training scripts run the loop in "
                         "a Trainer subclass on the stock install (docs/stacks.md)")
    return folder


def state(folder, name):
    """'pristine', 'patched' or 'modified' for one file."""
    text = read(os.path.join(folder, name))
    if sha256(text) == PRISTINE_SHA256[name]:
        return "pristine"
    if MARKER in text:
        return "patched"
    return "modified"


def check_all(folder):
    states = {name: state(folder, name) for name in PRISTINE_SHA256}
    bad = [n for n, s in states.items() if s == "modified"]
    if bad:
        raise SystemExit(f"error: {', '.join(os.path.join(folder, n) for n in bad)} differ from transformers "
                         f"{VERSION} and carry no Recurrent-KIF patch (edited by hand or by another patch); "
                         "reinstall transformers first")
    return states


def apply(folder, out=None):
    states = check_all(folder)
    if out:
        os.makedirs(out, exist_ok=True)
        for name in PRISTINE_SHA256:
            text = read(os.path.join(folder, name))
            original = text if states[name] == "pristine" else read(os.path.join(folder, name + BACKUP))
            write_atomically(os.path.join(out, name), patched_text(name, original))
        print(f"patched copies of {', '.join(PRISTINE_SHA256)} written to {out}; {folder} untouched")
        return
    for name in PRISTINE_SHA256:
        path = os.path.join(folder, name)
        if states[name] == "patched":
            print(f"{path}: already patched, left as it is")
            continue
        text = read(path)
        if not os.path.exists(path + BACKUP):
            shutil.copy2(path, path + BACKUP)
        write_atomically(path, patched_text(name, text))
        print(f"{path}: patched (original kept as {name + BACKUP})")


def revert(folder):
    check_all(folder)
    for name in PRISTINE_SHA256:
        path = os.path.join(folder, name)
        if state(folder, name) == "pristine":
            print(f"{path}: not patched, nothing to revert")
            continue
        backup = path + BACKUP
        if not os.path.exists(backup) or sha256(read(backup)) != PRISTINE_SHA256[name]:
            raise SystemExit(f"error: {backup} is missing or not the transformers {VERSION} original; "
                             f"reinstall transformers=={VERSION} instead")
        os.replace(backup, path)
        print(f"{path}: restored")


def diff(folder):
    for name in PRISTINE_SHA256:
        path = os.path.join(folder, name)
        original = read(path + BACKUP) if state(folder, name) == "patched" else read(path)
        sys.stdout.writelines(difflib.unified_diff(
            original.splitlines(True), patched_text(name, original).splitlines(True),
            f"a/transformers/{name}", f"b/transformers/{name}"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["apply", "revert", "status", "diff"])
    parser.add_argument("--transformers_dir", help="the transformers package folder (default: the installed one)")
    parser.add_argument("--out", help="apply: write the patched files here instead of into the installation")
    args = parser.parse_args(argv)
    folder = find_transformers(args.transformers_dir)
    if args.command == "apply":
        apply(folder, args.out)
    elif args.command == "revert":
        revert(folder)
    elif args.command == "diff":
        check_all(folder)
        diff(folder)
    else:
        for name, s in check_all(folder).items():
            print(f"{os.path.join(folder, name)}: {s}")


if __name__ == "__main__":
    main()
