"""OP of an order: mean test accuracy over all tasks of the adapter after the last task.

    python src/eval_avgPerf.py --base_model PATH --dataset_id 4 [--method_name RKIF]
    python src/eval_avgPerf.py --dataset_id 4 --model_name t5-largelora --method_name RKIF   # as released
    python src/eval_avgPerf.py --dataset_id 4 --pred_dir SOME_RUN_avgPerf/

Reads {output_path}/{model}lora_{method}_dataset_id_{id}_avgPerf/ (--model_name gives the whole
{model}lora prefix, as the released script does; --pred_dir any folder). Files may be ours
({i}-{task}.jsonl) or the released generators' ({i}-{task}_result.txt, scored with the released
rule). Prints a per-task table; writes metrics.json and metrics.csv beside the predictions.
Every prediction file must cover exactly the test split's ids.
"""

from rkif.commands import entry_points

if __name__ == "__main__":
    entry_points.eval_avgperf()
