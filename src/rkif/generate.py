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

    def body(settings):
        return generate(backbone, "matrix" if "bwt" in settings and settings.bwt.matrix else kind, settings)

    what = ("the adapter after the last task on every task's test split" if kind == "avgPerf" else
            "the adapter saved after task i on task i's test split (--matrix: after every task t on every i <= t)")
    return command(body, groups, name=f"generate_{kind}", defaults=backbone.generation_defaults,
                   choices={"method_name": METHOD_NAMES},
                   drop=tuple(LENGTH_FLAGS - {backbone.length_flag}),
                   doc=f"{backbone.title} predictions of {what}.")


def training_cutoff(backbone, settings):
    """The training cutoff the test inputs are compared with (and cut at, with --truncate_inputs): the flag's
    value, else the recipe's."""
    recipe = settings.run.recipe
    check_recipe(recipe)
    value = getattr(getattr(settings, backbone.name), backbone.cutoff_flag)
    return value if value is not None else recipe_values(recipe, backbone.name)[backbone.cutoff_flag]


def generate(backbone, kind, settings):
    """Write the kind's prediction files for the run of settings (every flag of generation_command, as its
    groups); their folder."""
    run = settings.run
    check_kind(run.method_name, kind)
    check_base_model(run.base_model)
    cutoff = training_cutoff(backbone, settings)
    order_name, tasks = resolve_order(run.dataset_id)
    begin = settings.bwt.service_begin_id if "bwt" in settings else None
    pred_dir = run_generation(
        kind=kind, tasks=tasks, order_name=order_name, base_model=run.base_model,
        method=run.method_name, output_path=run.output_path, data_dir=run.data_dir,
        batch_size=settings.generation.gen_batch_size, only=None if begin is None or begin < 0 else int(begin),
        suffix=backbone.file_suffix, fields=backbone.test_fields,
        make_predictor=backbone.predictor(settings, cutoff), seed=run.seed, recipe=run.recipe)
    print(f"{kind} predictions in {pred_dir}")
    return pred_dir
