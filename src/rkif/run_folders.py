"""Run folder names, built here and nowhere else.

    {output_path}/{model}lora_{method}_dataset_id_{order}[_recipe-{name}][_seed{n}]/{t}-{task}/   adapters
    ...same name..._{kind}/                                                            predictions

The released layout is kept for the default recipe and seed. The shell grids train through the
pipeline, which names folders here, and take their defaults from ``python -m rkif.run_folders
shell-defaults``; report.py parses names with PREDICTION_FOLDER.
"""

import os
import re
import sys

from .recipes import RECIPE_NAMES
from .settings import RunSettings

DEFAULT_SEED = RunSettings.seed
DEFAULT_RECIPE = RunSettings.recipe

# a prediction folder's name, parsed (report.py): model, method, order, recipe, seed, kind
PREDICTION_FOLDER = re.compile(r"^(?P<model>.+)_(?P<method>[A-Za-z0-9-]+)_dataset_id_(?P<order>.+?)"
                               r"(?:_recipe-(?P<recipe>[A-Za-z0-9]+))?(?:_seed(?P<seed>\d+))?"
                               r"_(?P<kind>avgPerf|bwt|matrix)$")


def run_name(model_name, method, order_name, seed=DEFAULT_SEED, recipe=DEFAULT_RECIPE):
    """{model_name}_{method}_dataset_id_{order}, plus _recipe-{name} for a recipe other than rkif and
    _seed{n} for a seed other than 42 (the released names stay as they were)."""
    return f"{model_name}_{method}_dataset_id_{order_name}{run_suffix(seed, recipe)}"


def run_suffix(seed=DEFAULT_SEED, recipe=DEFAULT_RECIPE):
    return (("" if (recipe or DEFAULT_RECIPE) == DEFAULT_RECIPE else f"_recipe-{recipe}")
            + ("" if int(seed) == DEFAULT_SEED else f"_seed{int(seed)}"))


def run_dir(output_path, base_model, method, order_name, seed=DEFAULT_SEED, recipe=DEFAULT_RECIPE):
    model_name = os.path.basename(os.path.normpath(base_model))
    if model_name.lower().endswith(".gguf"):  # a GGUF file: its name without the extension
        model_name = model_name[:-len(".gguf")]
    model_name += "lora"
    return os.path.join(output_path, run_name(model_name, method, order_name, seed, recipe))


def adapter_dir(output_path, base_model, method, order_name, task_id, task, seed=DEFAULT_SEED,
                recipe=DEFAULT_RECIPE):
    return os.path.join(run_dir(output_path, base_model, method, order_name, seed, recipe), f"{task_id}-{task}")


def prediction_dir(output_path, base_model, method, order_name, kind, model_name=None, seed=DEFAULT_SEED,
                   recipe=DEFAULT_RECIPE):
    """{output_path}/{model_name}_{method}_dataset_id_{id}[_recipe-{name}][_seed{n}]_{kind}; model_name defaults
    to the base model's folder name + "lora", the released scripts' naming (their --model_name is that whole
    prefix)."""
    if model_name:
        return os.path.join(output_path, run_name(model_name, method, order_name, seed, recipe) + f"_{kind}")
    return run_dir(output_path, base_model, method, order_name, seed, recipe) + f"_{kind}"


def order_summary_name(order_name, seed=DEFAULT_SEED, recipe=DEFAULT_RECIPE):
    """The name of an order's files across methods: {output_path}/summary_{name}.json/.csv and
    accuracy_matrices_{name}.png."""
    return f"dataset_id_{order_name}{run_suffix(seed, recipe)}"


def shell_defaults(environ):
    """Lines for the shell grids (scripts/common.sh): each of its variables that is unset gets the declared
    default; SEED and RECIPE are checked."""
    declared = {"DATA_DIR": RunSettings.data_dir, "OUTPUT_PATH": RunSettings.output_path,
                "METHOD": RunSettings.method_name, "SEED": RunSettings.seed, "RECIPE": RunSettings.recipe}
    seed, recipe = environ.get("SEED") or str(DEFAULT_SEED), environ.get("RECIPE") or DEFAULT_RECIPE
    if not seed.isdigit():
        raise SystemExit(f"error: SEED must be a non-negative integer, got {seed!r}")
    if recipe not in RECIPE_NAMES:
        raise SystemExit(f"error: RECIPE must be one of {RECIPE_NAMES}, got {recipe!r}")
    return "\n".join(f': "${{{k}:={v}}}"' for k, v in declared.items())


if __name__ == "__main__":  # the shell grids: scripts/common.sh
    if sys.argv[1:] != ["shell-defaults"]:
        raise SystemExit("usage: python -m rkif.run_folders shell-defaults")
    print(shell_defaults(os.environ))
