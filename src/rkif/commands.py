"""Every command of the project, built from the declared settings: the scripts under src/ are thin
wrappers around these (their released paths keep working), and `pip install -e .` also installs
them as console commands (pyproject.toml)."""

from .backbones import LLAMA, T5
from .command_line import run
from .generate import generation_command
from .pipeline import TRAIN, TRAINING_FLAGS, run_order
from .scoring import scoring_command

train_t5, train_llama = TRAIN["t5"], TRAIN["llama"]
generate_avgperf_t5 = generation_command(T5, "avgPerf")
generate_bwt_t5 = generation_command(T5, "bwt")
generate_avgperf_llama = generation_command(LLAMA, "avgPerf")
generate_bwt_llama = generation_command(LLAMA, "bwt")
eval_avgperf = scoring_command("avgPerf")
eval_bwt = scoring_command("bwt")

# (script, function, backbone whose recipe values it shows): the order of docs/flags.md
COMMANDS = (
    ("src/finetune_KIF_t5lora.py", train_t5, "t5"),
    ("src/finetune_KIF_llama.py", train_llama, "llama"),
    ("src/generate_avgPerf_t5lora.py", generate_avgperf_t5, "t5"),
    ("src/generate_bwt_t5lora.py", generate_bwt_t5, "t5"),
    ("src/generate_avgPerf_llama.py", generate_avgperf_llama, "llama"),
    ("src/generate_bwt_llama.py", generate_bwt_llama, "llama"),
    ("src/eval_avgPerf.py", eval_avgperf, None),
    ("src/eval_bwt.py", eval_bwt, None),
    ("src/run_pipeline.py", run_order, "t5"),
)


def _main(fn, script, extra_flags=()):
    def main(argv=None):
        return run(fn, argv, name=script, extra_flags=extra_flags)

    return main


finetune_t5_main = _main(train_t5, "finetune_KIF_t5lora.py")
finetune_llama_main = _main(train_llama, "finetune_KIF_llama.py")
generate_avgperf_t5_main = _main(generate_avgperf_t5, "generate_avgPerf_t5lora.py")
generate_bwt_t5_main = _main(generate_bwt_t5, "generate_bwt_t5lora.py")
generate_avgperf_llama_main = _main(generate_avgperf_llama, "generate_avgPerf_llama.py")
generate_bwt_llama_main = _main(generate_bwt_llama, "generate_bwt_llama.py")
eval_avgperf_main = _main(eval_avgperf, "eval_avgPerf.py")
eval_bwt_main = _main(eval_bwt, "eval_bwt.py")
pipeline_main = _main(run_order, "run_pipeline.py", TRAINING_FLAGS)


def demo_main(argv=None):
    from .demo import demo

    return run(demo, argv, name="demo.py")
