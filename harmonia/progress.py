"""Rich progress bars for every step that takes more than a few seconds."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

console = Console(stderr=True)


class Ticker:
    """What a progress bar hands to the work it shows: `ticker(n)` when n more items are done, and
    `ticker.note(text)` for what is going on meanwhile (shown under the bar; a no-op when disabled)."""

    def __init__(self, advance: Callable[[int], None] | None = None, note: Callable[[str], None] | None = None):
        self._advance, self._note = advance, note

    def __call__(self, n: int = 1) -> None:
        if self._advance is not None:
            self._advance(n)

    def note(self, text: str) -> None:
        if self._note is not None:
            self._note(text)


class NotedProgress(Progress):
    """A rich Progress that shows each task's `note` field on a line of its own under its bar (beside it, the
    note would squeeze the bar and the counts out of an 80-column terminal)."""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            if task.fields.get("note"):
                yield Text(f"  {task.fields['note']}", no_wrap=True, overflow="ellipsis")


@contextmanager
def progress_bar(label: str, total: int, enabled: bool = True) -> Iterator[Ticker]:
    """Yield a `Ticker` (`advance(n=1)` plus `.note(text)`); a no-op when disabled (tests, Ray workers)."""
    if not enabled:
        yield Ticker()
        return
    with NotedProgress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    ) as prog:
        task = prog.add_task(label, total=total, note="")
        yield Ticker(lambda n=1: prog.advance(task, n), lambda text: prog.update(task, note=text))
