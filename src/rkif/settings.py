"""Every setting of the scripts, declared once: a dataclass field with its default and one line of help,
in groups that check their own values.

The command lines are built from these declarations (``command``): the training scripts take
RunSettings + the methods' groups + KIFConfig + TrainingSettings + LoRASettings + their backbone's group,
the generators RunSettings + GenerationSettings + their backbone's lengths. A command's body receives
its flags as these groups, one ``Settings`` bundle read as ``settings.kif.quantile``. Where a backbone's
default differs (LLaMA's outer batch, precision, target modules, ...), its description in
rkif.backbones says so. Settings a recipe decides (learning rate, epochs, batch, lengths, LoRA
shape, O-LoRA's weights) default to None, "the recipe's value": rkif.recipes holds those values and
fills them in (``Settings.replace``), and a group checks each value that is not None whenever it is
built, so a recipe's values are checked like the user's.
``docs/flags.md`` is generated from here by rkif.commands (``python -m rkif.commands``; a test keeps it in step).
This module imports nothing from the package but rkif.errors (which imports nothing): every other
module may import it.
"""

import dataclasses
import inspect
from dataclasses import dataclass, field, fields
from typing import ClassVar

from .errors import InputError

OUTER_OPTIMIZERS = ("shared", "separate")
FISHER_ESTIMATES = ("per_example", "batch")
LR_SCHEDULERS = ("linear", "constant", "constant_with_warmup", "cosine")
RECIPE = "None: the recipe's"


def setting(default, help):
    return field(default=default, metadata={"help": help})


# Value checks: each names the flag and what it expects (InputError: one `error:` line, exit 2).

def _number(flag, value, integer):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool):
        raise InputError(f"--{flag}: expected {'an integer' if integer else 'a number'}, got {value!r}")


def positive(flag, value, integer=False):
    _number(flag, value, integer)
    if not value > 0:
        raise InputError(f"--{flag}: must be > 0, got {value}")


def non_negative(flag, value, integer=False):
    _number(flag, value, integer)
    if value < 0:
        raise InputError(f"--{flag}: must be >= 0, got {value}")


def in_range(flag, value, low, high, high_open=False):
    _number(flag, value, False)
    if not (low <= value < high if high_open else low <= value <= high):
        raise InputError(f"--{flag}: must be in [{low}, {high}{')' if high_open else ']'}, got {value}")


def one_of(flag, value, choices):
    if value not in choices:
        raise InputError(f"--{flag}: expected one of {choices}, got {value!r}")


def _given(group, names, check, *args, **kwargs):
    """check(flag, value, ...) for each of the group's names whose value is given (None: the recipe's, checked
    once the recipe has filled it in)."""
    for name in names:
        value = getattr(group, name)
        if value is not None:
            check(name, value, *args, **kwargs)


@dataclass
class RunSettings:
    """Which run: the model, the data, the order, the method, and the folders they name."""
    key: ClassVar[str] = "run"
    base_model: str = setting("", "a model folder saved with save_pretrained (e.g. /models/t5-large), or a hub id")
    dataset_id: object = setting(4, "the task order: 1-6 (1-3 Long, 4-6 Standard) or a JSON file listing task names")
    method_name: str = setting("RKIF", "the method, one of rkif.methods")
    data_dir: str = setting("data/long_sequence", "the benchmark: {data_dir}/{train,dev,test}/{task}[_T5].json")
    output_path: str = setting("output", "where run folders (adapters, predictions, metrics) are written")
    cache_dir: str = setting(None, "Hugging Face cache folder for a hub id")
    seed: int = setting(42, "data draws, LoRA initialisation, training order; another seed gets folders _seed{n}")
    recipe: str = setting("rkif", "rkif (the Recurrent-KIF release) | olora (the O-LoRA release) | tasl (the TaSL "
                                  "release); flags given win; another recipe gets folders _recipe-{name}")

    def __post_init__(self):
        _given(self, ("seed",), non_negative, integer=True)


@dataclass
class MemorySettings:
    """The replay memory (RKIF's outer loop, Replay's mixed-in data)."""
    key: ClassVar[str] = "memory"
    memory_data_ratio: float = setting(2, "percent of each earlier task's training set kept in the replay memory")

    def __post_init__(self):
        _given(self, ("memory_data_ratio",), in_range, 0, 100)


@dataclass
class OLoRASettings:
    """O-LoRA's and IncLoRA's penalties on the new branch."""
    key: ClassVar[str] = "olora"
    lambda_orth: float = setting(None, f"OLoRA: weight of the orthogonality penalty ({RECIPE}; olora: per task)")
    lambda_l2: float = setting(None, f"OLoRA, IncLoRA: weight of the L2 norm of the new branch ({RECIPE})")

    def __post_init__(self):
        _given(self, ("lambda_orth", "lambda_l2"), non_negative)


@dataclass
class EWCSettings:
    """EWC's penalty and its Fisher."""
    key: ClassVar[str] = "ewc"
    # from scripts/sweep_ewc_lambda.py on the demo, with the per-example Fisher (docs/baselines.md)
    ewc_lambda: float = setting(10000.0, "EWC: weight of the Fisher penalty")
    ewc_fisher: str = setting("per_example", "EWC: per_example (empirical Fisher) | batch (squared micro-batch "
                                             "gradients)")

    def __post_init__(self):
        _given(self, ("ewc_lambda",), non_negative)
        _given(self, ("ewc_fisher",), one_of, FISHER_ESTIMATES)


@dataclass
class LwFSettings:
    """LwF's distillation towards the previous adapter (Li and Hoiem, Learning without Forgetting, TPAMI 2017)."""
    key: ClassVar[str] = "lwf"
    # the paper's values: T = 2 (after Hinton et al. 2015) and the loss balance lambda_o = 1 (its section 3)
    lwf_lambda: float = setting(1.0, "LwF: weight of the distillation term (the paper's loss balance lambda_o)")
    lwf_temperature: float = setting(2.0, "LwF: temperature T of the distillation softmax")

    def __post_init__(self):
        _given(self, ("lwf_lambda",), non_negative)
        _given(self, ("lwf_temperature",), positive)


@dataclass
class TaSLSettings:
    """TaSL's consolidation after each task (rkif.methods.tasl)."""
    key: ClassVar[str] = "tasl"
    # skill_consolidation_TasLoRA.py:169 (WoodScene/TaSL)
    tasl_temperature: float = setting(0.25, "TaSL: temperature of each skill unit's softmax over the present and "
                                            "the accumulated importance")

    def __post_init__(self):
        _given(self, ("tasl_temperature",), positive)


@dataclass
class KIFConfig:
    """The Recurrent-KIF loop (rkif.loop): K inner steps, then M outer steps on memory and the fusion."""
    key: ClassVar[str] = "kif"
    inner_iterations: int = setting(8, "K: fuse every K optimizer steps on the new task")
    outer_iterations: int = setting(4, "M: outer steps on memory batches before each fusion")
    train_batch_size_outer: int = setting(8, "memory examples per outer step")
    quantile: float = setting(0.8, "one global threshold over all LoRA entries: the q-quantile of the importance")
    beta1: float = setting(0.85, "EMA coefficient of the sensitivity")
    beta2: float = setting(0.85, "EMA coefficient of the uncertainty")
    empty_inner_score_flag: bool = setting(1, "1: reset the inner importance after each fusion")
    empty_outer_score_flag: bool = setting(0, "1: reset the outer importance after each fusion")
    outer_optimizer: str = setting("shared", "shared: the inner optimizer (released) | separate: own AdamW at "
                                             "--outer_lr")
    outer_lr: float = setting(1e-3, "learning rate of the outer steps with --outer_optimizer separate")
    outer_micro_batch_size: int = setting(0, "0: the memory batch in one forward/backward (released); N: chunks "
                                             "of N")

    def __post_init__(self):
        for name in ("inner_iterations", "outer_iterations", "train_batch_size_outer"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0.0 <= float(self.quantile) <= 1.0:
            raise InputError(f"--quantile must be in [0, 1], got {self.quantile!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise InputError(f"--{name} must be in [0, 1), got {getattr(self, name)!r}")
        if int(self.outer_micro_batch_size) < 0:
            raise InputError(f"--outer_micro_batch_size must be >= 0 (0: the whole memory batch at once), got "
                             f"{self.outer_micro_batch_size!r}")
        if self.outer_optimizer not in OUTER_OPTIMIZERS:
            raise InputError(f"--outer_optimizer must be one of {OUTER_OPTIMIZERS}, got {self.outer_optimizer!r}")
        # the released flags are 0/1
        self.empty_inner_score_flag = bool(self.empty_inner_score_flag)
        self.empty_outer_score_flag = bool(self.empty_outer_score_flag)


@dataclass
class TrainingSettings:
    """One task's Trainer run."""
    key: ClassVar[str] = "training"
    task_id: int = setting(0, "the task of the order to train (0-based); task t > 0 starts from task t-1's adapter")
    batch_size: int = setting(None, f"effective batch = micro_batch_size x accumulation x ranks ({RECIPE})")
    micro_batch_size: int = setting(None, f"examples per forward/backward per device ({RECIPE})")
    eval_batch_size: int = setting(8, "validation batch per device (the Trainer's default, as released)")
    num_epochs: float = setting(None, f"epochs per task ({RECIPE})")
    learning_rate: float = setting(None, f"AdamW learning rate ({RECIPE})")
    warmup_steps: int = setting(None, f"linear warm-up steps ({RECIPE})")
    lr_scheduler_type: str = setting(None, f"linear | constant | constant_with_warmup | cosine ({RECIPE})")
    max_steps: int = setting(-1, "> 0 overrides num_epochs (benchmarks, smoke runs)")
    val_set_size: int = setting(None, f"> 0: validate on that many dev examples of every task so far and keep the "
                                      f"best checkpoint ({RECIPE})")
    eval_steps: int = setting(40, "evaluate and save every eval_steps optimizer steps")
    logging_steps: int = setting(10, "log every logging_steps optimizer steps")
    precision: str = setting("fp32", "fp32 (released) | bf16 (a GPU with bfloat16); LLaMA also auto | fp16")
    tf32: bool = setting(False, "TF32 matmuls (Ampere and newer GPUs)")
    report_to: str = setting("none", "none | tensorboard | wandb (optional packages), comma-separated")
    gradient_checkpointing: bool = setting(False, "recompute activations in backward (memory for time)")
    group_by_length: bool = setting(False, "batch examples of similar length together (the Trainer's option)")
    resume_from_checkpoint: object = setting(None, "a checkpoint folder; the flag alone: the newest complete one; "
                                                   "auto: that or step 0")

    def __post_init__(self):
        _given(self, ("batch_size", "micro_batch_size", "eval_batch_size", "eval_steps", "logging_steps"), positive,
               integer=True)
        _given(self, ("learning_rate",), positive)
        _given(self, ("warmup_steps", "task_id", "val_set_size"), non_negative, integer=True)
        if self.max_steps != -1:  # -1: train for num_epochs
            non_negative("max_steps", self.max_steps, integer=True)
        _given(self, ("num_epochs",), non_negative)
        _given(self, ("lr_scheduler_type",), one_of, LR_SCHEDULERS)
        if self.num_epochs is not None and not (self.max_steps > 0 or self.num_epochs > 0):
            raise InputError(f"--num_epochs {self.num_epochs} with --max_steps {self.max_steps}: no training step "
                             "would happen; give --num_epochs > 0 (or --max_steps > 0)")


@dataclass
class LoRASettings:
    key: ClassVar[str] = "lora"
    lora_r: int = setting(None, f"LoRA rank ({RECIPE})")
    lora_alpha: int = setting(None, f"LoRA scaling alpha ({RECIPE})")
    lora_dropout: float = setting(None, f"LoRA dropout ({RECIPE})")
    lora_target_modules: object = setting(("q", "v"), "the attention projections that get LoRA branches")

    def __post_init__(self):
        _given(self, ("lora_r",), positive, integer=True)
        _given(self, ("lora_alpha",), positive)
        _given(self, ("lora_dropout",), in_range, 0, 1, high_open=True)


@dataclass
class T5Settings:
    key: ClassVar[str] = "t5"
    max_input_length: int = setting(None, f"T5: input tokens kept in training; the test inputs' cutoff "
                                          f"({RECIPE})")
    max_target_length: int = setting(None, f"T5: target tokens kept in training ({RECIPE})")

    def __post_init__(self):
        _given(self, ("max_input_length", "max_target_length"), positive, integer=True)


@dataclass
class LlamaSettings:
    key: ClassVar[str] = "llama"
    cutoff_len: int = setting(None, f"LLaMA: tokens of prompt + response kept in training; the test prompts' "
                                    f"cutoff ({RECIPE})")
    load_8bit: bool = setting(False, "LLaMA: 8-bit base weights (needs bitsandbytes and a GPU before Hopper)")
    train_on_inputs: bool = setting(False, "LLaMA: the loss covers the prompt too")
    add_eos_token: bool = setting(True, "LLaMA: append EOS to the prompt when counting masked tokens (released)")
    long_prompts: str = setting("released", "LLaMA: released (cut at cutoff_len) | shorten_input (cut the input's "
                                            "middle)")
    prompt_template_name: str = setting("alpaca", "LLaMA: alpaca (released) | chatml (the tokenizer's chat template)")

    def __post_init__(self):
        _given(self, ("cutoff_len",), positive, integer=True)


@dataclass
class GenerationSettings:
    """Predictions on the test splits. (gen_: the training scripts' --batch_size and --precision are training's.)"""
    key: ClassVar[str] = "generation"
    gen_batch_size: int = setting(32, "the most test examples per generation batch (fewer where long inputs would "
                                      "pass --generation_memory_gb)")
    gen_precision: str = setting("auto", "auto (= fp32, LoRA merged: keeps small updates) | fp32 | bf16 | fp16 | "
                                     "bf16_merged | released (see rkif/generation_precision.py, docs/evaluation.md)")
    truncate_inputs: bool = setting(False, "cut test inputs at the training cutoff (default: fed whole, as released)")
    max_length: int = setting(128, "T5: the longest prediction, in tokens")
    max_new_tokens: int = setting(128, "LLaMA: the longest response, in tokens")
    generation_memory_gb: float = setting(0.0, "GiB a generation batch may take; batches are cut to fit it "
                                               "(rkif/generation_memory.py). 0: 85% of the GPU's free memory "
                                               "once the model is loaded; on CPU, no limit but --gen_batch_size")

    def __post_init__(self):
        _given(self, ("gen_batch_size",), positive, integer=True)


@dataclass
class BWTSettings:
    key: ClassVar[str] = "bwt"
    service_begin_id: int = setting(-1, "only task i (-1: every task)")
    matrix: bool = setting(False, "the adapter after every task t on every task i <= t (the accuracy matrix)")


@dataclass
class ScoringSettings:
    """Where the predictions are, when not named from base_model (the released eval scripts' flags)."""
    key: ClassVar[str] = "scoring"
    model_name: str = setting(None, "the run folders' {model}lora prefix, as the released eval scripts take it "
                                    "(e.g. t5-largelora); else named from --base_model")
    pred_dir: str = setting(None, "score this prediction folder")
    avgperf_dir: str = setting(None, "bwt: the avgPerf folder it is compared with")
    test_data_name: str = setting(None, "bwt: the bwt folder's name under output_path (released flag)")
    test_data_name2: str = setting(None, "bwt: the avgPerf folder's name under output_path (released flag)")


@dataclass
class PipelineSettings:
    """run_pipeline.py: train every task of an order, generate, score, for several methods."""
    key: ClassVar[str] = "pipeline"
    methods: str = setting("RKIF", "comma-separated methods, each a sequence of its own")
    backbone: str = setting("t5", "t5 (finetune_KIF_t5lora) | llama (finetune_KIF_llama)")
    no_resume: bool = setting(False, "restart an unfinished task at step 0 (default: resume from its newest "
                                     "complete checkpoint)")
    train_only: bool = setting(False, "train every task and stop: no predictions, no scores (the training grid "
                                      "scripts)")


def default(group, name):
    """The declared default of group's setting `name`."""
    return {f.name: f.default for f in fields(group)}[name]


class Settings:
    """One command's settings as its groups, by each group's key: ``settings.kif.quantile``,
    ``settings.training.learning_rate``. Immutable: ``replace`` returns a new bundle (rebuilt groups check
    themselves again)."""

    def __init__(self, groups):
        self._groups = {g.key: g for g in groups}

    def __getattr__(self, key):
        groups = self.__dict__.get("_groups", {})
        if key not in groups:
            raise AttributeError(f"these settings have no {key!r} group (they have {sorted(groups)})")
        return groups[key]

    def __contains__(self, key):
        return key in self._groups

    def groups(self):
        return tuple(self._groups.values())

    def group_of(self, name):
        """The key of the group that holds setting `name`, or None."""
        return next((k for k, g in self._groups.items() if name in {f.name for f in fields(g)}), None)

    def replace(self, **changes):
        """A copy with the given settings changed, each in the group that holds it."""
        by_group = {}
        for name, value in changes.items():
            key = self.group_of(name)
            if key is None:
                raise KeyError(f"no group of these settings holds {name!r}")
            by_group.setdefault(key, {})[name] = value
        return Settings(dataclasses.replace(g, **by_group[k]) if k in by_group else g
                        for k, g in self._groups.items())

    def values(self):
        """{name: value} of every setting, in the groups' order: what run_info.json records and training prints."""
        return {f.name: getattr(g, f.name) for g in self._groups.values() for f in fields(g)}


def built(groups, values):
    """Settings of the groups (a group may be (group, names)), each built from values' entries for its fields
    (the others at their declared defaults), so each checks itself."""
    out = []
    for group in groups:
        group, names = group if isinstance(group, tuple) else (group, None)
        out.append(group(**{f.name: values[f.name] for f in fields(group)
                            if f.name in values and (names is None or f.name in names)}))
    return Settings(out)


def selected_fields(groups, drop=()):
    """The groups' fields in order, each name once (its first declaration); a group may be (group, names) for
    some of its fields."""
    seen = set(drop)
    for group in groups:
        group, names = group if isinstance(group, tuple) else (group, None)
        for f in fields(group):
            if (names is None or f.name in names) and f.name not in seen:
                seen.add(f.name)
                yield f


def parameters(groups, defaults=None, drop=()):
    """The inspect.Parameters of the selected fields, each with its declared default unless `defaults` holds
    another one."""
    return [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              default=(defaults or {}).get(f.name, f.default),
                              annotation=f.type if isinstance(f.type, type) and f.type is not object
                              else inspect.Parameter.empty)
            for f in selected_fields(groups, drop)]


def help_lines(groups, drop=()):
    return {f.name: f.metadata.get("help", "") for f in selected_fields(groups, drop)}


def command(body, groups, *, name, doc, defaults=None, drop=(), more_flags=False, choices=None):
    """A function whose keyword flags are the groups' fields (fire and rkif.cli_runner read its signature);
    called, it hands body the flags' values as groups, body(Settings), each group checked as it is built.
    more_flags: it also takes **flags, handed on as body(settings, flags) (the pipeline passes them on to
    training, which checks them). choices: {flag: its values}, added to its help (the registries that
    settings.py, importing nothing, cannot read)."""
    params = parameters(groups, defaults, drop)
    if more_flags:
        params.append(inspect.Parameter("flags", inspect.Parameter.VAR_KEYWORD))
    signature = inspect.Signature(params)

    def fn(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        flags = values.pop("flags", {})
        settings = built(groups, values)
        return body(settings, flags) if more_flags else body(settings)

    helps = help_lines(groups, drop)
    for flag, values in (choices or {}).items():
        helps[flag] = f"{helps[flag]}: {' | '.join(values)}"
    fn.__signature__ = signature
    fn.__name__ = fn.__qualname__ = name
    fn.flag_help = helps
    fn.groups = tuple(g if isinstance(g, tuple) else (g, None) for g in groups)
    # Google-style Args: fire shows each line beside its flag in --help
    fn.__doc__ = doc.rstrip() + "\n\nArgs:\n" + "\n".join(f"    {p.name}: {helps.get(p.name, '')}" for p in params
                                                          if p.kind is not p.VAR_KEYWORD)
    return fn
