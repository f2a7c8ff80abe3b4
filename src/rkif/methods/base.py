"""The seam every method plugs into: what the training of one task asks of its method.

A method is one object in the registry (rkif.methods.METHODS). Training, the task plan, the
pipeline, the grid and the recipes ask it questions; none of them tests which method it is. A new
method subclasses Method, overrides what differs, and registers an instance (docs/adding-a-method.md).

What the base class does is sequential LoRA fine-tuning (SeqLoRA): every task in order, each from the
previous task's adapter, on its own training data, with no extra loss and nothing saved beside the
adapter.
"""

from peft import PeftModel

from ..lora import new_lora_model


class Method:
    name = ""
    # its own settings groups (rkif.settings, each with its key): every training command takes their flags;
    # build, check and end_of_task read them from the task's settings (settings.ewc.ewc_lambda)
    settings = ()
    # what the next task unpickles from this one's folder beside the adapter (checked as plain data first)
    state_files = ()
    uses_memory = False  # the task plan builds the replay memory of the earlier tasks for it

    # --- which tasks, which predictions -------------------------------------------------------------

    def trained_task_ids(self, n_tasks):
        """The task ids at which it trains (the others have nothing to train)."""
        return list(range(n_tasks))

    def nothing_to_train(self, task_id, n_tasks):
        """Why task task_id has nothing to train, or None when it trains."""
        if task_id not in self.trained_task_ids(n_tasks):
            return f"{self.name} trains at task ids {self.trained_task_ids(n_tasks)}; nothing to train for task {task_id}"
        return None

    @property
    def prediction_kinds(self):
        """avgPerf: the last adapter on every task; bwt and matrix need an adapter after every task."""
        return ("avgPerf", "bwt", "matrix")

    def starts_from_previous(self, task_id):
        """Whether task task_id starts from the adapter saved after task task_id - 1."""
        return task_id > 0

    # --- the task's data ----------------------------------------------------------------------------

    def training_records(self, read_train, tasks, task_id):
        """The records the task trains on; read_train(task) reads one task's training split."""
        return read_train(tasks[task_id])

    def task_data(self, plan, shuffle):
        """(the Trainer's training records, the outer loop's memory records), each through shuffle, the
        released data.shuffle(); an empty memory means plain training (no outer loop)."""
        return shuffle(plan.train), []

    def training_examples(self, task_id, tasks, count, memory_data_ratio):
        """How many examples the task trains on, for time estimates; count(task) is a training split's size."""
        return count(tasks[task_id])

    # --- flags ----------------------------------------------------------------------------------------

    def recipe_values(self, recipe, values):
        """The {flag: value} that recipe sets, for this method (a method may set its own weights)."""
        return values

    def check(self, settings, world_size):
        """Refuse settings this method cannot run with (InputError), before anything is loaded; each group has
        checked its own values already."""

    # --- the adapter, the loss, what is saved -------------------------------------------------------

    def build(self, base, plan, lora, settings):
        """(the task's trainable PeftModel, its extra loss or None). lora: the LoRA shape (r, alpha, dropout,
        target_modules, task_type) of a new adapter; settings: the task's rkif.settings.Settings. The extra loss is called on every training
        micro-batch as extra_loss(model, inputs, outputs) and added to the task loss."""
        if plan.previous_adapter:
            return PeftModel.from_pretrained(base, plan.previous_adapter, is_trainable=True), None
        return new_lora_model(base, r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                              target_modules=lora.target_modules, task_type=lora.task_type), None

    def step_tracker(self, settings):
        """None, or an object the Trainer updates after every optimizer step of the task, update(model,
        global_step), whose state_dict() goes into every checkpoint and load_state_dict() restores on resume;
        end_of_task reads it as trainer.step_tracker. With one, the task's last step is always checkpointed:
        an interruption after training reruns end_of_task only."""
        return None

    def end_of_task(self, trainer, plan, features, micro_batch_size, settings):
        """{file name: writer(path)} saved beside the adapter, after training."""
        return {}
