"""rkif.settings: commands built from the declarations, each backbone's defaults, and the Trainer
arguments a task's settings turn into."""

import inspect
from dataclasses import fields

import pytest

from rkif.backbones import LLAMA, T5
from rkif.commands import COMMANDS
from rkif.compat import training_argument
from rkif.recipes import RECIPE_FLAGS
from rkif.errors import InputError
from rkif.settings import (EWCSettings, KIFConfig, LoRASettings, Settings, TrainingSettings, built, command,
                           default, help_lines)
from rkif.training import BatchShape, trainer_arguments


COMMAND = {c.name: c.fn for c in COMMANDS}
train_t5, train_llama = COMMAND["train_t5"], COMMAND["train_llama"]
generate_bwt_t5, generate_bwt_llama = COMMAND["generate_bwt_t5"], COMMAND["generate_bwt_llama"]


def defaults(fn):
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()}


def test_a_command_takes_every_declared_field_with_its_default_and_hands_over_its_groups():
    seen = []
    fn = command(seen.append, (KIFConfig, (TrainingSettings, ["task_id", "max_steps"])), name="f", doc="Doc.",
                 defaults={"quantile": 0.5})
    assert list(inspect.signature(fn).parameters) == [f.name for f in fields(KIFConfig)] + ["task_id", "max_steps"]
    fn(beta1=0.5, task_id=3)
    settings = seen[0]
    assert settings.kif == KIFConfig(beta1=0.5, quantile=0.5)  # typed: read as settings.kif.quantile
    assert settings.training.task_id == 3 and settings.training.max_steps == -1
    assert settings.kif.beta2 == default(KIFConfig, "beta2")
    assert list(settings.values())[:2] == ["inner_iterations", "outer_iterations"]  # the flags' order
    with pytest.raises(TypeError):
        fn(no_such_flag=1)
    with pytest.raises(AttributeError, match="no 'lora' group"):
        settings.lora
    assert "    quantile: one global threshold" in fn.__doc__  # the help fire shows beside each flag


@pytest.mark.parametrize("group,values,message", [
    (KIFConfig, {"quantile": 1.5}, "--quantile must be in [0, 1], got 1.5"),
    (TrainingSettings, {"lr_scheduler_type": "exp"}, "--lr_scheduler_type: expected one of"),
    (TrainingSettings, {"num_epochs": 0}, "--num_epochs 0 with --max_steps -1: no training step would happen"),
    (TrainingSettings, {"max_steps": -2}, "--max_steps: must be >= 0, got -2"),
    (LoRASettings, {"lora_r": 2.5}, "--lora_r: expected an integer, got 2.5"),
    (EWCSettings, {"ewc_fisher": "diagonal"}, "--ewc_fisher: expected one of ('per_example', 'batch')"),
])
def test_a_group_checks_its_own_values_when_built_and_when_replaced(group, values, message):
    with pytest.raises(InputError) as e:
        group(**values)
    assert message in str(e.value)
    settings = Settings([group()])
    with pytest.raises(InputError) as e:
        settings.replace(**values)  # a recipe's value, filled in later, is checked the same way
    assert message in str(e.value)


def test_none_is_the_recipes_value_and_is_checked_once_filled():
    settings = built([TrainingSettings, LoRASettings], {"task_id": 2})
    assert settings.training.learning_rate is None and settings.lora.lora_r is None
    filled = settings.replace(learning_rate=1e-3, lora_r=4)
    assert (filled.training.learning_rate, filled.lora.lora_r, filled.training.task_id) == (1e-3, 4, 2)
    with pytest.raises(KeyError, match="no group of these settings holds 'quantile'"):
        settings.replace(quantile=0.5)


def test_each_backbone_differs_from_the_declarations_only_where_its_description_says():
    t5, llama = defaults(train_t5), defaults(train_llama)
    shared = set(t5) & set(llama)
    assert {n for n in shared if t5[n] != llama[n]} == set(LLAMA.training_defaults) - set(T5.training_defaults)
    assert llama["train_batch_size_outer"] == 64 and t5["train_batch_size_outer"] == default(KIFConfig,
                                                                                             "train_batch_size_outer")
    assert set(t5) - set(llama) == {"max_input_length", "max_target_length"}
    assert {"cutoff_len", "load_8bit", "long_prompts"} <= set(llama) - set(t5)
    # what a recipe sets defaults to None ("the recipe's value") on the command line
    for fn, backbone in ((train_t5, "t5"), (train_llama, "llama")):
        assert all(defaults(fn)[flag] is None for flag in RECIPE_FLAGS[backbone])
    assert defaults(generate_bwt_llama)["gen_batch_size"] == defaults(generate_bwt_t5)["gen_batch_size"] == 32 and "max_length" not in defaults(generate_bwt_llama)


def test_every_flag_of_every_command_has_help():
    for script, fn in ((c.script, c.fn) for c in COMMANDS if c.in_flags_doc):
        params = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
        text = fn.__doc__.split("Args:\n", 1)[1]
        for p in params:
            line = next(x for x in text.splitlines() if x.strip().startswith(f"{p.name}:"))
            assert len(line.split(": ", 1)[1]) > 5, (script, p.name)


@pytest.mark.parametrize("validate", [False, True])
def test_trainer_arguments_follow_the_released_recipe(validate, tmp_path):
    training = TrainingSettings(batch_size=8, micro_batch_size=2, num_epochs=3, learning_rate=3e-4, warmup_steps=5,
                                lr_scheduler_type="linear", eval_steps=7, logging_steps=3)
    args = trainer_arguments(str(tmp_path), training, BatchShape(2, 4, 1), validate, seed=5, fp16=False, bf16=False)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 4)
    assert (args.num_train_epochs, args.learning_rate, args.warmup_steps, args.seed) == (3, 3e-4, 5, 5)
    assert (args.weight_decay, args.max_grad_norm, args.save_steps, args.save_total_limit) == (0.0, 1.0, 7, 2)
    assert args.per_device_eval_batch_size == 8 and args.logging_steps == 3 and args.report_to == []
    assert args.load_best_model_at_end is validate
    assert training_argument(args, "evaluation_strategy").value == ("steps" if validate else "no")
    assert args.metric_for_best_model == ("eval_loss" if validate else None)


def test_help_lines_take_the_first_declaration():
    assert help_lines([KIFConfig])["quantile"].startswith("one global threshold")
