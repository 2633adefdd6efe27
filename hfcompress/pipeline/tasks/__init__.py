"""One task object per kind of task: the only code in the pipeline that reads ``task_type``."""

from .base import Measurement, TaskData, TaskKind
from .causal_lm import CausalLMTask
from .classifier import ClassifierTask, MultiLabelTask, TokenClassificationTask

TASKS: dict[str, TaskKind] = {
    task.name: task for task in (ClassifierTask(), MultiLabelTask(), TokenClassificationTask(), CausalLMTask())
}
TASK_TYPES = tuple(TASKS)


def task_kind(task_type: str) -> TaskKind:
    """The task object of a ``task_type`` (one of ``TASK_TYPES``)."""
    from ...errors import check_choice

    check_choice("task_type", task_type, TASK_TYPES)
    return TASKS[task_type]


__all__ = ["TASKS", "TASK_TYPES", "Measurement", "TaskData", "TaskKind", "task_kind"]
