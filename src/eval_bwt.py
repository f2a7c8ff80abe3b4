"""BWT of an order: mean over every task but the last of (a_Ti - a_ii).

    python src/eval_bwt.py --base_model PATH --dataset_id 4 [--method_name RKIF]
    python src/eval_bwt.py --base_model PATH --dataset_id 4 --matrix   # R[t][i]: OP, BWT, forgetting, heatmap
    python src/eval_bwt.py --dataset_id 4 --test_data_name t5-largelora_RKIF_dataset_id_4_bwt \
        --test_data_name2 t5-largelora_RKIF_dataset_id_4_avgPerf                 # as released

a_ii comes from the bwt predictions (--test_data_name: that folder under --output_path; --pred_dir:
any folder), a_Ti from the avgPerf ones (--test_data_name2 / --avgperf_dir). --model_name names
both folders as the released scripts do ({model_name}_{method}_dataset_id_{id}_bwt/_avgPerf).
Released-format files ({i}-{task}_result.txt) are scored with the released rule. Prints a
per-task table; writes metrics.json and metrics.csv (and accuracy_matrix.png with --matrix)
beside the predictions.
"""

from rkif.commands import entry_points

if __name__ == "__main__":
    entry_points.eval_bwt()
