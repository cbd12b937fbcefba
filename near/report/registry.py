"""Figure and table kinds: each a function ``(RunData, spec item, Output) -> files written``.

A new kind is one function decorated with `figure_kind` or `table_kind` in a module listed in
`KIND_MODULES`; the spec's ``kind:`` names it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

FIGURE_KINDS: dict[str, Callable] = {}
TABLE_KINDS: dict[str, Callable] = {}
KIND_MODULES = ("near.report.curve_kinds", "near.report.score_kinds", "near.report.landscape")


def figure_kind(name: str) -> Callable:
    """Register a figure kind under `name`."""
    def add(fn: Callable) -> Callable:
        FIGURE_KINDS[name] = fn
        return fn
    return add


def table_kind(name: str) -> Callable:
    """Register a table kind under `name`."""
    def add(fn: Callable) -> Callable:
        TABLE_KINDS[name] = fn
        return fn
    return add


def _load() -> None:
    for mod in KIND_MODULES:
        importlib.import_module(mod)


def figure_kinds() -> dict[str, Callable]:
    """Every registered figure kind."""
    _load()
    return FIGURE_KINDS


def table_kinds() -> dict[str, Callable]:
    """Every registered table kind."""
    _load()
    return TABLE_KINDS


@dataclass
class Output:
    """Where and how kinds write: the folder, the report's spec, a warning sink, a drawer (inline or
    a process pool), the scorers of learnt-reward figures, and what the page shows of each output."""

    dir: Path
    spec: object  # near.report.spec.ReportSpec
    warn: Callable[[str], None]
    submit: Callable[[Callable, tuple], object]  # run a drawing function, here or in a worker
    scorers: dict[str, Callable] = field(default_factory=dict)
    group_by: list[str] | None = None  # the caller's --group-by: overrides every figure's grouping
    captions: dict[str, str] = field(default_factory=dict)  # file stem -> caption on the page
    tables_html: list = field(default_factory=list)  # (name, caption, wide frame) for the page

    def where(self, item) -> str:
        """'spec file: figure NAME' for messages."""
        what = "figure" if hasattr(item, "hue") else "table"
        return f"{self.spec.file}: {what} '{item.name}'"
