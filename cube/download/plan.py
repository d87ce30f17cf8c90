"""The planner's vocabulary: a :class:`Fetch` is one request to a server and the file(s) it leaves
in place; a :class:`ProductPlan` is one product's fetches with the arithmetic of its size estimate.

A fetch is complete when all its targets exist (they only appear whole, see
:mod:`cube.download.files`); ``--dry-run`` prints the plan, a run executes the incomplete fetches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Fetch:
    """One download: ``run()`` writes every path of ``targets``; ``source`` says what it asks for."""

    product: str
    targets: tuple[Path, ...]
    source: str
    estimated_bytes: int | None
    run: Callable[[], None] = field(compare=False, repr=False)

    def complete(self) -> bool:
        return all(t.is_file() for t in self.targets)


@dataclass(frozen=True)
class ProductPlan:
    """The fetches of one product and how their size was estimated (``estimate``, one line)."""

    product: str
    fetches: tuple[Fetch, ...]
    estimate: str

    @property
    def todo(self) -> list[Fetch]:
        return [f for f in self.fetches if not f.complete()]

    def estimated_bytes(self, todo_only: bool = False) -> int | None:
        sizes = [f.estimated_bytes for f in (self.todo if todo_only else self.fetches)]
        return None if any(s is None for s in sizes) else sum(sizes)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def describe(plan: ProductPlan, root: Path) -> list[str]:
    """The dry-run lines of one product: a total, the estimate's arithmetic, then each fetch."""
    todo = plan.todo
    lines = [f"{plan.product}: {len(plan.fetches)} fetch(es), {len(todo)} to do, {len(plan.fetches) - len(todo)} "
             f"complete; {human_bytes(plan.estimated_bytes(todo_only=True))} to fetch "
             f"({human_bytes(plan.estimated_bytes())} in all)",
             f"  estimate: {plan.estimate}"]
    for f in plan.fetches:
        state = "have " if f.complete() else "fetch"
        names = ", ".join(str(t.relative_to(root)) for t in f.targets[:3]) + (" ..." if len(f.targets) > 3 else "")
        lines.append(f"  {state} {names}  <- {f.source}  ({human_bytes(f.estimated_bytes)})")
    return lines
