"""Problems found in a dataset (each with its file and line), the check report and how it is printed."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning"]
MAX_RENDERED_PROBLEMS: int = 200
_VARIABLE = re.compile(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]|\S*[/\\]\S*|-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Problem:
    severity: Severity
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.severity}: {self.message}"

    @property
    def kind(self) -> str:
        """The message with names, paths and numbers blanked: problems of one kind share it."""
        return f"{self.severity}: {_VARIABLE.sub('…', self.message)}"


class Collector:
    """Accumulates problems while a format reads a folder."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, file: str, line: int | None, message: str) -> None:
        self.problems.append(Problem("error", file, line, message))

    def warning(self, file: str, line: int | None, message: str) -> None:
        self.problems.append(Problem("warning", file, line, message))


@dataclass
class Summary:
    clips_per_split: dict[str, int] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    events_per_class: dict[str, int] = field(default_factory=dict)
    total_hours: float = 0.0


@dataclass
class CheckReport:
    """What `harmonia data check` prints: the format read, the files of each split, problems, a summary."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)
    format: str | None = None
    how: str = ""  # "auto-detected" or "configured"
    sources: dict[str, list[str]] = field(default_factory=dict)  # split -> files that make it

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def headline(self) -> str:
        """First line: the format and which files make each split (or that no format matched)."""
        if self.format is None:
            return f"{self.root}: no dataset format matched (what each format looked for is listed below)"
        splits = "; ".join(f"{s}: {', '.join(files)}" for s, files in self.sources.items()) or "no splits"
        return f"format {self.format} ({self.how or 'auto-detected'}) · {splits}"

    def kinds(self) -> list[tuple[str, int, Problem]]:
        """(kind, count, first example) of every kind of problem, most frequent first."""
        counts = Counter(p.kind for p in self.problems)
        first: dict[str, Problem] = {}
        for p in self.problems:
            first.setdefault(p.kind, p)
        return [(k, n, first[k]) for k, n in counts.most_common()]

    def render(self, console=None) -> None:
        """Print the headline, problems (a per-kind digest first when truncated), then the summaries."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        console = console or Console()
        console.print(escape(self.headline()), soft_wrap=True)
        if len(self.problems) > MAX_RENDERED_PROBLEMS:
            console.print(f"{len(self.problems)} problems of {len(self.kinds())} kinds:")
            for _, n, p in self.kinds():
                console.print(escape(f"  {n} × {p}"), soft_wrap=True)
        if self.problems:
            table = Table(title=f"Problems in {self.root}", show_lines=False)
            for col in ("severity", "file", "line", "message"):
                table.add_column(col, overflow="fold")
            for p in self.problems[:MAX_RENDERED_PROBLEMS]:
                style = "red" if p.severity == "error" else "yellow"
                table.add_row(f"[{style}]{p.severity}[/]", escape(p.file), "" if p.line is None else str(p.line),
                              escape(p.message))
            console.print(table)
            if len(self.problems) > MAX_RENDERED_PROBLEMS:
                console.print(f"... and {len(self.problems) - MAX_RENDERED_PROBLEMS} more problems")
        self._render_summary(console)

    def _render_summary(self, console) -> None:
        from rich.table import Table

        s = self.summary
        splits = Table(title="Clips per split")
        splits.add_column("split")
        splits.add_column("clips", justify="right")
        for name, n in s.clips_per_split.items():
            splits.add_row(name, str(n))
        splits.add_row("[bold]total[/]", f"[bold]{sum(s.clips_per_split.values())}[/] ({s.total_hours:.2f} h)")
        console.print(splits)
        classes = Table(title=f"{len(s.classes)} classes")
        classes.add_column("class")
        classes.add_column("events", justify="right")
        for name in s.classes:
            classes.add_row(name, str(s.events_per_class.get(name, 0)))
        console.print(classes)
        verdict = "[green]no errors[/]" if self.ok else f"[red]{len(self.errors)} errors[/]"
        console.print(f"{verdict}, {len(self.warnings)} warnings")
