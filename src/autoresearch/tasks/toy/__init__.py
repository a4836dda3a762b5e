"""The toy task: a Karpathy-style script whose metric is a known function of its constants.

`autoresearch init toy DIR` makes it; a replay run of its queue takes seconds, so a newcomer sees the
whole loop (baseline, keep, discard, the seed-only rule, the report) before committing to a real task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoresearch.tasks.base import Task


class ToyTask(Task):
    name = "toy"
    summary = "a ten-second Karpathy-style toy: val_bpb is a known function of LR and WIDTH"
    template = Path(__file__).parent / "template"

    def write(self, dest: Path, **options: Any) -> None:
        super().write(dest, **options)
        (dest / "gitignore.txt").rename(dest / ".gitignore")

    def describe(self, facts: dict) -> str:
        return "val_bpb is lowest at LR = 1e-3, WIDTH = 32"


TASK = ToyTask()
