"""A Karpathy-style toy research repository for loop tests: train.py prints ``val_bpb: X``.

The metric is a known function of the constants, so tests know which change should be kept:
val_bpb = (log10(LR) + 3)² + 1 + small fold/seed noise; the optimum is LR = 1e-3.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from autoresearch.agents.base import Proposal

TRAIN = '''\
"""Toy training script: prints its validation metric like Karpathy's autoresearch."""
import math
import os
import random
import time

LR = 0.01  # learning rate
WIDTH = 4  # model width (unused by the toy metric)
SEED = 0  # random seed
SLEEP = {sleep}  # seconds of pretend training

fold = int(os.environ.get("AUTORESEARCH_FOLD") or 0)
seed = int(os.environ.get("AUTORESEARCH_SEED") or 0)
rng = random.Random(seed * 1000 + fold)
for step in range(1, 3):
    time.sleep(SLEEP / 2)
    print(f"step {{step}}/2 loss {{1.0 / step:.3f}}", flush=True)
val = (math.log10(LR) + 3) ** 2 + 1.0 + rng.gauss(0, 0.01)
print(f"val_bpb: {{val:.6f}}")
'''

CONFIG = '''\
[task]
name = "toy"
editable = ["train.py"]
scratchpad = "scratchpad.md"
program = "program.md"
fixed = ["program.md", "queue.toml"]

[run]
command = ["python", "train.py"]
time_budget_s = 10
timeout_s = {timeout}
grace_s = 1
folds = 2

[metric]
name = "val_bpb"
direction = "minimize"
source = "regex"
pattern = '^val_bpb:\\s*([-+0-9.eE]+)'

[loop]
max_crash_fixes = 1

[decision]
rule = "{rule}"

[agent]
name = "replay"
queue = "queue.toml"

[search_space]
LR = {{ low = 1e-5, high = 1e-1, log = true }}
'''

PROGRAM = '''\
# Toy program

Lower val_bpb. Change one constant at a time.

## Phase 1: learning rate
Budget: 3 experiments. Advance after 2 experiments without improvement.

## Phase 2: everything else
Budget: 20 experiments.
'''

QUEUE = '''\
[[experiment]]
description = "LR 1e-2 -> 1e-3"
hypothesis = "the optimum is lower"
set = { LR = 0.001 }

[[experiment]]
description = "LR 1e-3 -> 1e-1"
hypothesis = "bigger steps"
set = { LR = 0.1 }

[[experiment]]
description = "halve LR in code (crashes first)"
replace = [{ file = "train.py", old = "val = (math", new = "LR = LR / 2\\nraise SystemExit(3)\\nval = (math" }]
fix = [{ file = "train.py", old = "raise SystemExit(3)\\n", new = "" }]

[[experiment]]
description = "a different seed"
set = { SEED = 5 }
'''


# A queue entry whose loss runs 10x the champion's and then hangs at its last step: the abort rule stops it.
DIVERGE = """\
[[experiment]]
description = "diverge"
[[experiment.replace]]
file = "train.py"
old = 'loss {1.0 / step:.3f}", flush=True)'
new = '''loss {10.0 / step:.3f}", flush=True)
    time.sleep(60 if step == 2 else 0)'''
"""


class Vandal:
    """An agent that edits what it must not: ``action(workdir)`` is its whole turn."""

    name = "vandal"

    def __init__(self, action):
        self.action = action

    def propose(self, brief, workdir):
        self.action(Path(workdir))
        return Proposal(description="vandalism")

    def observe(self, *a):
        pass


def make_toy_repo(root: Path, *, sleep: float = 0.0, timeout: float = 30, rule: str = "noise",
                  queue: str = QUEUE) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(TRAIN.format(sleep=sleep), encoding="utf-8")
    (root / "autoresearch.toml").write_text(CONFIG.format(timeout=timeout, rule=rule), encoding="utf-8")
    (root / "program.md").write_text(PROGRAM, encoding="utf-8")
    (root / "queue.toml").write_text(queue, encoding="utf-8")
    (root / "scratchpad.md").write_text("# Scratchpad\n\n", encoding="utf-8")
    (root / ".gitignore").write_text(".autoresearch/\n__pycache__/\n", encoding="utf-8")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    import os

    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "toy task"]):
        subprocess.run(["git", *args], cwd=root, check=True, env={**os.environ, **env})
    return root


def textblock(s: str) -> str:
    return textwrap.dedent(s).lstrip()
