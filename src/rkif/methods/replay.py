"""Replay: the replay memory of the earlier tasks mixed into the new task's training data."""

import math

from ..settings import MemorySettings
from .base import Method


class Replay(Method):
    name = "Replay"
    settings = (MemorySettings,)
    uses_memory = True

    def task_data(self, plan, shuffle):
        return shuffle(plan.train + plan.memory), []

    def training_examples(self, task_id, tasks, count, memory_data_ratio):
        return count(tasks[task_id]) + sum(math.floor(count(t) * memory_data_ratio / 100) for t in tasks[:task_id])
