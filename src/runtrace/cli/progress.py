"""Progress of long commands: a rich bar on a terminal, and a plain line now and then anywhere else.

The long batches (`corpus build`, `corpus trace`, `dataset build`, `trace`) usually run in the background
with their output in a log file. rich draws no bar there, so without these lines the log of an hour's
build stays empty until the end, and nobody can tell a slow stage from a stuck one.
"""

from __future__ import annotations

import time

from rich.progress import Progress, TaskID

LOG_EVERY_S = 60.0
_DONE = float("inf")  # a finished task has logged its last line


class LoggedProgress(Progress):
    """A rich `Progress` that, where its console is not a terminal, prints each task's state as one line
    every `log_every` seconds, and once more when a task that was logged finishes. Short tasks print
    nothing, so quick commands' output is unchanged."""

    def __init__(self, *columns, log_every: float = LOG_EVERY_S, **kwargs) -> None:
        super().__init__(*columns, **kwargs)
        self._plain = not self.disable and not self.console.is_terminal
        self._log_every = log_every
        self._logged_at: dict[TaskID, float] = {}

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        if not self._plain:
            return
        with self._lock:
            task = self._tasks[task_id]
            logged = self._logged_at.get(task_id)
            if logged == _DONE:
                return
            now = time.monotonic()
            finished = task.total is not None and task.completed >= task.total
            due = now - (logged if logged is not None else task.start_time or now) >= self._log_every
            if not (due or (finished and logged is not None)):
                return
            self._logged_at[task_id] = _DONE if finished else now
            line = _line(task.description, task.completed, task.total, task.elapsed or 0.0)
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)


def _line(description: str, completed: float, total: float | None, elapsed: float) -> str:
    minutes, seconds = divmod(int(elapsed), 60)
    hours, minutes = divmod(minutes, 60)
    clock = f"{hours}:{minutes:02d}:{seconds:02d}"
    if total:
        return f"{description}: {int(completed):,} of {int(total):,} ({completed / total:.0%}) after {clock}"
    return f"{description}: {int(completed):,} done after {clock}"
