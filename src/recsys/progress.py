"""Progress bars for long steps (rich), silent where nobody watches."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)


class Steps:
    """Named steps, each with a bar when its size is known; records each step's seconds."""

    def __init__(self, console: Console | None = None, *, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self.seconds: dict[str, float] = {}
        self.current: str | None = None  # the step running now, for a failure's message

    def __enter__(self) -> Steps:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @contextlib.contextmanager
    def step(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        task = self.progress.add_task(name, total=total)
        started = time.perf_counter()
        self.current = name

        def advance(n: int) -> None:
            self.progress.advance(task, n)

        try:
            yield advance
        finally:
            self.seconds[name] = time.perf_counter() - started
            self.progress.update(
                task, completed=total if total is not None else 1, total=total or 1
            )
