"""Long commands write plain progress lines where no bar can be drawn (a log file), and nothing more
where a bar is drawn or a task is short."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import MofNCompleteColumn, TextColumn

from runtrace.cli.progress import LoggedProgress


def _run(console: Console, log_every: float, steps: int, total: int | None) -> list[str]:
    with LoggedProgress(TextColumn("{task.description}"), MofNCompleteColumn(), console=console,
                        transient=True, log_every=log_every) as progress:  # fmt: skip
        task = progress.add_task("encoding", total=total)
        for _ in range(steps):
            progress.advance(task)
    return [line for line in console.file.getvalue().splitlines() if line.strip()]


def _log_file() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=200)


def test_a_log_file_gets_a_line_when_due_and_one_when_the_task_ends() -> None:
    lines = _run(_log_file(), log_every=0.0, steps=3, total=3)
    assert [line.split(" after ")[0] for line in lines] == [
        "encoding: 1 of 3 (33%)",
        "encoding: 2 of 3 (67%)",
        "encoding: 3 of 3 (100%)",
    ]
    assert all(line.endswith("after 0:00:00") for line in lines)


def test_a_task_without_a_total_counts_what_is_done() -> None:
    assert _run(_log_file(), log_every=0.0, steps=2, total=None)[-1].startswith("encoding: 2 done after ")


def test_a_short_task_and_a_terminal_print_nothing_of_it() -> None:
    assert _run(_log_file(), log_every=3600.0, steps=50, total=50) == []
    terminal = Console(file=io.StringIO(), force_terminal=True, width=200)
    lines = _run(terminal, log_every=0.0, steps=3, total=3)
    assert not any("encoding: 1 of 3" in line for line in lines)  # the bar, not log lines
