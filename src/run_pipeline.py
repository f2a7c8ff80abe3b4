"""The whole job for one order: train every task, generate predictions, compute OP and BWT.

    python src/run_pipeline.py --base_model /models/t5-large --dataset_id 4 --methods RKIF,SeqLoRA,Replay
    python src/run_pipeline.py ... --matrix          # also every R[t][i]: forgetting and heatmaps
    python src/run_pipeline.py --backbone llama --base_model /models/Llama-2-7b-chat-hf --dataset_id 4
    python src/run_pipeline.py ... --methods OLoRA,IncLoRA --recipe olora   # as the O-LoRA release trained them

Resumable at any point: tasks whose adapter exists and prediction files that are complete
are skipped; an unfinished task resumes from its newest complete checkpoint (--no_resume: it
restarts at step 0); a half-written prediction file is continued. Flags not listed here (e.g.
--num_epochs, --learning_rate, --memory_data_ratio) go to the training script
(finetune_KIF_t5lora.py, or finetune_KIF_llama.py with --backbone llama).
--recipe (rkif, the default, or olora; rkif.recipes) sets the training protocol of every task; its
runs live in their own folders (suffix _recipe-{name}), as other seeds do (_seed{n}).
Writes {output_path}/summary_dataset_id_{id}[_recipe-{name}][_seed{n}].json/.csv, and with --matrix a
side-by-side heatmap {output_path}/accuracy_matrices_dataset_id_{id}[...].png.
"""

from rkif.commands import entry_points

if __name__ == "__main__":
    entry_points.pipeline()
