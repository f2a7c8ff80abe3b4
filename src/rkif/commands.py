"""Every command of the project, in one table: the scripts under src/ (their released paths keep
working), the console commands `pip install -e .` installs (pyproject.toml) and docs/flags.md
(`python -m rkif.commands > docs/flags.md`) are all read from COMMANDS."""

import inspect
import os
from dataclasses import dataclass
from types import SimpleNamespace

from .backbones import LLAMA, T5
from .cli_runner import run
from .demo import demo
from .generate import generation_command
from .pipeline import run_order
from .recipes import RECIPES
from .scoring import scoring_command
from .training import TRAIN, TRAINING_FLAGS


@dataclass(frozen=True)
class Command:
    name: str  # entry_points.{name} runs it; the console command is rkif-{name, - for _}
    script: str  # its script under src/ (the released name)
    fn: object  # the command: its keyword parameters are its flags
    backbone: str = None  # whose recipe values docs/flags.md shows for flags that default to the recipe's
    extra_flags: tuple = ()  # flags it passes on (the pipeline: every training flag)
    in_flags_doc: bool = True  # built from the declared settings, so docs/flags.md lists its flags

    @property
    def console_command(self):
        return "rkif-" + self.name.replace("_", "-")

    def main(self, argv=None):
        return run(self.fn, argv, name=os.path.basename(self.script), extra_flags=self.extra_flags)


# the order of docs/flags.md
COMMANDS = (
    Command("train_t5", "src/finetune_KIF_t5lora.py", TRAIN["t5"], "t5"),
    Command("train_llama", "src/finetune_KIF_llama.py", TRAIN["llama"], "llama"),
    Command("generate_avgperf_t5", "src/generate_avgPerf_t5lora.py", generation_command(T5, "avgPerf"), "t5"),
    Command("generate_bwt_t5", "src/generate_bwt_t5lora.py", generation_command(T5, "bwt"), "t5"),
    Command("generate_avgperf_llama", "src/generate_avgPerf_llama.py", generation_command(LLAMA, "avgPerf"), "llama"),
    Command("generate_bwt_llama", "src/generate_bwt_llama.py", generation_command(LLAMA, "bwt"), "llama"),
    Command("eval_avgperf", "src/eval_avgPerf.py", scoring_command("avgPerf")),
    Command("eval_bwt", "src/eval_bwt.py", scoring_command("bwt")),
    Command("pipeline", "src/run_pipeline.py", run_order, "t5", TRAINING_FLAGS),
    Command("demo", "src/demo.py", demo, in_flags_doc=False),  # its flags: the demo's experiment (rkif.demo)
)
entry_points = SimpleNamespace(**{c.name: c.main for c in COMMANDS})


def flags_markdown(commands, recipes=None):
    """docs/flags.md: for every command (a Command), its flags with default and help;
    a training command's flags that default to None show each recipe's value (recipes: {name: {backbone:
    {flag: value}}})."""
    lines = ["# Flags", "",
             "Generated from the declarations in `src/rkif/settings.py` by `python -m rkif.commands > docs/flags.md`",
             "(a test checks that this file is in step with them). `None` means the recipe's value",
             "(`--recipe rkif`, `olora` or `tasl`, `src/rkif/recipes.py`); a flag given on the command line always "
             "wins.", ""]
    for c in (c for c in commands if c.in_flags_doc):
        title, fn, backbone = c.script, c.fn, c.backbone
        lines += [f"## {title}", "", "| flag | default | help |", "|---|---|---|"]
        helps = fn.flag_help
        for p in inspect.signature(fn).parameters.values():
            if p.kind is p.VAR_KEYWORD:
                lines.append("| (any training flag) | | passed on to the training script |")
                continue
            shown = f"`{p.default!r}`"
            if p.default is None and backbone and any(p.name in r[backbone] for r in (recipes or {}).values()):
                shown = "recipe: " + ", ".join(f"{name} `{r[backbone][p.name]!r}`" for name, r in recipes.items())
            lines.append(f"| `--{p.name}` | {shown} | {helps.get(p.name, '').replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(flags_markdown(COMMANDS, RECIPES), end="")
