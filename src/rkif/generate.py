"""The one generation entry: predictions of a run's adapters on the test splits, for either backbone.

    generate = generation_command(T5, "avgPerf")   # what src/generate_avgPerf_t5lora.py runs

avgPerf: the adapter after the last task on every task; bwt: the adapter after task i on task i (or
with --matrix every R[t][i], i <= t). Where the files go and how an interrupted file resumes is
rkif.prediction_folders; the backbone (rkif.backbones) supplies the predictor.
"""

from .backbones import LENGTH_FLAGS
from .prediction_folders import run_generation
from .methods import METHOD_NAMES, check_kind
from .base_model import check_base_model
from .recipes import check_recipe, recipe_values
from .settings import BWTSettings, GenerationSettings, RunSettings, command
from .tasks import resolve_order

def generation_command(backbone, kind):
    """The generation script of a backbone for kind avgPerf or bwt (bwt also takes --service_begin_id and
    --matrix)."""
    groups = [RunSettings, GenerationSettings, (backbone.settings, list(backbone.generation_flags))]
    if kind == "bwt":
        groups.append(BWTSettings)

    def body(values):
        return generate(backbone, "matrix" if values.pop("matrix", BWTSettings.matrix) else kind, values)

    what = ("the adapter after the last task on every task's test split" if kind == "avgPerf" else
            "the adapter saved after task i on task i's test split (--matrix: after every task t on every i <= t)")
    return command(body, groups, name=f"generate_{kind}", defaults=backbone.generation_defaults,
                   choices={"method_name": METHOD_NAMES},
                   drop=tuple(LENGTH_FLAGS - {backbone.length_flag}),
                   doc=f"{backbone.title} predictions of {what}.")


def training_cutoff(backbone, value, recipe):
    """The training cutoff the test inputs are compared with (and cut at, with --truncate_inputs): the flag's
    value, else the recipe's."""
    check_recipe(recipe)
    return value if value is not None else recipe_values(recipe, backbone.name)[backbone.cutoff_flag]


def generate(backbone, kind, values):
    """Write the kind's prediction files for values' run (every flag of generation_command); their folder."""
    check_kind(values["method_name"], kind)
    check_base_model(values["base_model"])
    cutoff = training_cutoff(backbone, values[backbone.cutoff_flag], values["recipe"])
    order_name, tasks = resolve_order(values["dataset_id"])
    begin = values.get("service_begin_id")
    pred_dir = run_generation(
        kind=kind, tasks=tasks, order_name=order_name, base_model=values["base_model"],
        method=values["method_name"], output_path=values["output_path"], data_dir=values["data_dir"],
        batch_size=values["batch_size"], only=None if begin is None or begin < 0 else int(begin),
        suffix=backbone.file_suffix, fields=backbone.test_fields,
        make_predictor=backbone.predictor(values, cutoff), seed=values["seed"], recipe=values["recipe"])
    print(f"{kind} predictions in {pred_dir}")
    return pred_dir
