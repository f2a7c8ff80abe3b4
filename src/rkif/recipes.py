"""Training recipes: the protocol a sequence is trained under (learning rate, epochs, batch, lengths,
LoRA shape, validation, O-LoRA's penalty weights), as each method's authors ran it.

    --recipe rkif    the Recurrent-KIF release's values (the default; every method, same protocol)
    --recipe olora   the O-LoRA release's (cmnfriend/O-LoRA, scripts/order_{1,2,3}.sh and long.sh)
    --recipe tasl    the TaSL release's (WoodScene/TaSL, finetune_TasLoRA.py; LLaMA: finetune_continualDST.py
                     and scripts/run_train_TaSL_LLaMA7B.sh)

A flag given on the command line always wins over the recipe. The O-LoRA values were read from
its scripts: lr 1e-3 constant, no warm-up, 1 epoch (2 for MNLI in its Long script), 8 per device
x 8 GPUs x accumulation 1 = 64 per step, source / target lengths 512 / 50, LoRA r 8, alpha 32,
dropout 0.1 (run_uie_lora.py), no evaluation, the final model kept. Its penalty weights:

- Standard orders (4-6 here): lamda_1 = 0.5, lamda_2 = 0 for every task.
- Long orders: its long.sh (our order 3, yelp first) passes lamda_1 0 for the first task, 0.5 for
  tasks 2-9 and 5 for tasks 10-15, and lamda_2 0.1 for COPA, QQP, SST-2, yahoo, BoolQA, 0.3 for RTE
  and WiC, 0 otherwise. One script cannot tell whether each follows the position or the task; here
  lamda_1 goes by position (it grows with the number of frozen branches it weighs against) and
  lamda_2 by task name (it varies from task to task without a pattern in position), for every order
  of the 15 Long tasks. On order 3 both rules give exactly the released values.
- IncLoRA: the same recipe with both weights 0 (rkif.methods.olora.IncLoRA.recipe_values). Custom orders
  follow the Standard rule.
"""

from .errors import InputError
from .settings import RunSettings
from .tasks import TASK_ORDERS, check_task_id

RECIPE_NAMES = ("rkif", "olora", "tasl")
DEFAULT_RECIPE = RunSettings.recipe

# Every flag a recipe sets, per backbone; the training scripts default these flags to None
# ("the recipe's value"), so this table is their one declaration.
RKIF = {
    "t5": dict(batch_size=8, micro_batch_size=2, num_epochs=10, learning_rate=3e-4, warmup_steps=50,
               lr_scheduler_type="linear", max_input_length=1024, max_target_length=128, val_set_size=25,
               lora_r=8, lora_alpha=32, lora_dropout=0.05, lambda_orth=0.5, lambda_l2=0.0),
    "llama": dict(batch_size=64, micro_batch_size=16, num_epochs=10, learning_rate=3e-4, warmup_steps=50,
                  lr_scheduler_type="linear", cutoff_len=512, val_set_size=25,
                  lora_r=8, lora_alpha=32, lora_dropout=0.05, lambda_orth=0.5, lambda_l2=0.0),
}
_OLORA_COMMON = dict(batch_size=64, micro_batch_size=8, num_epochs=1, learning_rate=1e-3, warmup_steps=0,
                     lr_scheduler_type="constant", val_set_size=0, lora_r=8, lora_alpha=32, lora_dropout=0.1,
                     lambda_orth=0.5, lambda_l2=0.0)
# The O-LoRA release ships T5 scripts only; on LLaMA the recipe keeps the same values, the 512-token
# source length becoming the cutoff.
OLORA = {"t5": dict(_OLORA_COMMON, max_input_length=512, max_target_length=50),
         "llama": dict(_OLORA_COMMON, cutoff_len=512)}

# The TaSL release (WoodScene/TaSL). T5: the defaults of finetune_TasLoRA.py, its LoRA form, which no script of
# the release runs (scripts/run_train_TaSL_T5.sh runs the full fine-tuning variant, with 5 epochs): batch 8,
# micro-batch 2, 1 epoch, lr 3e-4, input 1024 / target 128 tokens, 100 validation examples (lines 76-82), LoRA r 8,
# alpha 16, dropout 0.05 (84-86), 50 warm-up steps and the Trainer's linear schedule (341). LLaMA:
# scripts/run_train_TaSL_LLaMA7B.sh passes 5 epochs, cutoff 512, micro-batch 16, batch 128 (lines 13-18) to
# finetune_continualDST.py, whose defaults give lr 3e-4, 20 validation examples, r 8, alpha 16, dropout 0.05
# (50-56) and 50 warm-up steps (324); its LoRA on q, k, v and o (script line 16) is --lora_target_modules, not a
# recipe value. O-LoRA's weights are RKIF's (the release has no O-LoRA). tau 0.25 is --tasl_temperature's default.
_TASL_COMMON = dict(learning_rate=3e-4, warmup_steps=50, lr_scheduler_type="linear", lora_r=8, lora_alpha=16,
                    lora_dropout=0.05, lambda_orth=0.5, lambda_l2=0.0)
TASL = {"t5": dict(_TASL_COMMON, batch_size=8, micro_batch_size=2, num_epochs=1, max_input_length=1024,
                   max_target_length=128, val_set_size=100),
        "llama": dict(_TASL_COMMON, batch_size=128, micro_batch_size=16, num_epochs=5, cutoff_len=512,
                      val_set_size=20)}
RECIPES = {"rkif": RKIF, "olora": OLORA, "tasl": TASL}

LONG_TASKS = frozenset(TASK_ORDERS[3])
OLORA_LONG_LAMBDA_L2 = {"copa": 0.1, "qqp": 0.1, "sst-2": 0.1, "yahoo": 0.1, "boolqa": 0.1, "rte": 0.3, "wic": 0.3}
OLORA_LONG_EPOCHS = {"mnli": 2}

RECIPE_FLAGS = {backbone: tuple(values) for backbone, values in RKIF.items()}


def check_recipe(recipe):
    if recipe not in RECIPE_NAMES:
        raise InputError(f"--recipe: unknown recipe {recipe!r}; expected one of {RECIPE_NAMES}")


def benchmark_of(tasks):
    """long when the order is the 15 Long-benchmark tasks (orders 1-3, or a custom order of them), else standard."""
    return "long" if frozenset(tasks) == LONG_TASKS and len(tasks) == len(LONG_TASKS) else "standard"


def olora_task_values(tasks, task_id):
    """(lambda_orth, lambda_l2, num_epochs) of one task under the O-LoRA recipe."""
    task = tasks[task_id]
    if benchmark_of(tasks) == "long":
        lambda_orth = 0.0 if task_id == 0 else 0.5 if task_id < 9 else 5.0
        lambda_l2, num_epochs = OLORA_LONG_LAMBDA_L2.get(task, 0.0), OLORA_LONG_EPOCHS.get(task, 1)
    else:
        lambda_orth, lambda_l2, num_epochs = 0.5, 0.0, 1
    return lambda_orth, lambda_l2, num_epochs


def recipe_values(recipe, backbone, tasks=None, task_id=None, method=None):
    """{flag: value} the recipe sets for one task (tasks and task_id: the per-task O-LoRA weights), as the
    method (a rkif.methods.Method, or None) takes them (IncLoRA: no penalty weights under olora)."""
    check_recipe(recipe)
    if tasks is not None:
        check_task_id(task_id, tasks)
    values = dict(RECIPES[recipe][backbone])
    if recipe == "olora" and tasks is not None:
        values["lambda_orth"], values["lambda_l2"], values["num_epochs"] = olora_task_values(tasks, task_id)
    return method.recipe_values(recipe, values) if method is not None else values


def apply_recipe(settings, backbone, tasks=None, method=None):
    """settings (a rkif.settings.Settings) with every setting left at None filled from settings.run.recipe;
    returns (settings, record). The groups rebuilt check the recipe's values as they check the user's.

    record, for run_info.json: the recipe's name, the benchmark rule it used, the values it set
    (under the flags' names) and the flags given explicitly that overrode it.
    """
    recipe = settings.run.recipe or DEFAULT_RECIPE
    values = recipe_values(recipe, backbone, tasks, settings.training.task_id, method)
    given = settings.values()
    set_by_recipe = {flag: value for flag, value in values.items() if given[flag] is None}
    overridden = {flag: given[flag] for flag in values if given[flag] is not None}
    record = {"name": recipe, "set": set_by_recipe, "overridden": overridden}
    if recipe == "olora" and tasks is not None:
        record["benchmark"] = benchmark_of(tasks)
    return settings.replace(recipe=recipe, **set_by_recipe), record
