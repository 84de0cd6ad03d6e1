"""Tasks a candidate is trained and scored on; importing this package registers them.

Built in: ``recall`` (MQAR, Zoology), ``listops`` (Long Range Arena) and ``text`` (byte-level
LM on your files). A user task is any `Task` subclass, named by import path, e.g.
``get_task("mypkg.tasks:MyTask")``; see docs/tasks.md.
"""

from trainers.tasks import listops, recall, text  # noqa: F401  (registers the tasks)
from trainers.tasks.base import IGNORE_INDEX, TASKS, Batch, Task, combine_stats, get_task

__all__ = ["IGNORE_INDEX", "TASKS", "Batch", "Task", "combine_stats", "get_task"]
