"""Check every file of a data folder; exit 2 with a precise message on the first class of problem.

    python data/validate.py DATA_DIR [--benchmark my_benchmark.json]

Checks, in order: schema, duplicate ids, empty outputs, outputs outside the option list
(classification tasks; tasks a --benchmark description marks rougeL are free text), and T5/LLaMA
pair consistency. Prints the counts per split and the label distribution per task.
Training and evaluation run the per-file checks on every file they read.
"""


from rkif.cli_runner import run
from rkif.tasks import read_description
from rkif.validate import summary_lines, validate_folder


def main(data_dir, benchmark=None):
    metrics = read_description(benchmark)[1] if benchmark else None
    records = validate_folder(data_dir, metrics)
    print(f"{data_dir}: {len(records)} files, no problem found")
    print("\n".join(summary_lines(records)))


if __name__ == "__main__":
    run(main)
