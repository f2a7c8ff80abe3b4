"""Recurrent-KIF: the inner loop on the new task, the outer loop on the replay memory of the earlier
tasks, fused entry by entry by importance. The loop itself is rkif.loop (the Trainer mixin); the method
only hands it the memory."""

from ..errors import InputError
from ..settings import MemorySettings
from .base import Method


class RecurrentKIF(Method):
    name = "RKIF"
    settings = (MemorySettings,)  # K, M, the quantile, ...: KIFConfig, the loop's own group
    uses_memory = True

    def task_data(self, plan, shuffle):
        return shuffle(plan.train), shuffle(plan.memory)  # the released order of the two shuffles

    def check(self, settings, world_size):
        outer = settings.kif.train_batch_size_outer
        if outer % world_size:
            raise InputError(f"--train_batch_size_outer {outer} is split over the {world_size} ranks: give a "
                             f"multiple of {world_size}")
