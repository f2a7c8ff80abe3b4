"""MTL: one adapter trained once on the union of every task of the order (the upper bound of the
comparison, not continual). It trains at the order's last task id and has no adapter after each task,
so BWT, forgetting and the accuracy matrix are not defined for it."""

from .base import Method


class MTL(Method):
    name = "MTL"

    def trained_task_ids(self, n_tasks):
        return [n_tasks - 1]

    def nothing_to_train(self, task_id, n_tasks):
        if task_id in self.trained_task_ids(n_tasks):
            return None
        return (f"{self.name} trains once, on all {n_tasks} tasks together, at --task_id {n_tasks - 1}; nothing "
                f"to train for task {task_id}")

    @property
    def prediction_kinds(self):
        return ("avgPerf",)

    def starts_from_previous(self, task_id):
        return False

    def training_records(self, read_train, tasks, task_id):
        return [r for t in tasks for r in read_train(t)]

    def training_examples(self, task_id, tasks, count, memory_data_ratio):
        return sum(count(t) for t in tasks)
