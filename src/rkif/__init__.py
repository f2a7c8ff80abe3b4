"""Recurrent-KIF: recurrent knowledge identification and fusion for continual LoRA training.

The algorithm lives in small modules that tests can call without a model:
importance (sensitivity x uncertainty tracker), fusion (global mask, four-case fusion),
memory (replay buffer), tasks (task orders), task_files (loading and validation).
kif_trainer.py wires them into a transformers.Trainer subclass.
"""

__version__ = "0.1.0"
