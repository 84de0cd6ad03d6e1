"""Tasks a candidate is trained and scored on; importing this package registers them.

Built in: ``recall`` (MQAR, Zoology), ``listops`` (Long Range Arena) and ``text`` (byte-level
LM on your files). Add one: a file here with a `Task` subclass decorated `@TASKS.register()`
(every module of this package is imported below). A user task is any `Task` subclass, named by
import path, e.g. ``get_task("mypkg.tasks:MyTask")``; see docs/tasks.md.
"""

from spaces.registry import import_submodules
from trainers.tasks.base import IGNORE_INDEX, TASKS, Batch, Task, combine_stats, get_task

import_submodules(__name__, __path__)

__all__ = ["IGNORE_INDEX", "TASKS", "Batch", "Task", "combine_stats", "get_task"]
