"""A toy night for the findings tests: three kept changes whose contributions at the champion are known.

val_bpb = (log10(LR) + 3)² + (width − 32)² / 1000 + 1 + noise, where width = WIDTH until a code change
makes it max(WIDTH, 32). The replay queue keeps, in this order:

1. LR 1e-2 → 1e-3: gain 1.0 when kept; at the champion still 1.0 (the terms add up);
2. WIDTH 4 → 16: gain 0.528 when kept; at the champion 0 (the code change below makes WIDTH ≥ 32 anyway):
   it no longer matters;
3. width = max(WIDTH, 32) in code: gain 0.256 when kept; at the champion 0.256 (without it, WIDTH is 16).

Between them one change is discarded (LR 1e-1). The noise has a part shared by every variant with the same
seed and fold (it cancels in a paired difference) and a small part drawn from the code itself (other code,
other luck), so a paired comparison has a real, small standard error.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from toyrepo import make_toy_repo

TRAIN = '''\
"""Toy training script with two constants whose effects are known."""
import math
import os
import random

LR = 0.01  # learning rate
WIDTH = 4  # model width
SLEEP = 0.0  # seconds of pretend training

fold = int(os.environ.get("AUTORESEARCH_FOLD") or 0)
seed = int(os.environ.get("AUTORESEARCH_SEED") or 0)
width = WIDTH
shared = random.Random(seed * 1000 + fold).gauss(0, 0.01)
own = random.Random(f"{seed}/{fold}/" + open(__file__).read()).gauss(0, 0.003)  # other code, other luck
print("step 1/1 loss 1.000", flush=True)
val = (math.log10(LR) + 3) ** 2 + (width - 32) ** 2 / 1000 + 1.0 + shared + own
print(f"val_bpb: {val:.6f}")
'''

QUEUE = '''\
[[experiment]]
description = "LR 1e-2 -> 1e-3"
set = { LR = 0.001 }

[[experiment]]
description = "LR 1e-3 -> 1e-1"
set = { LR = 0.1 }

[[experiment]]
description = "WIDTH 4 -> 16"
set = { WIDTH = 16 }

[[experiment]]
description = "width at least 32 in code"
replace = [{ file = "train.py", old = "width = WIDTH\\n", new = "width = max(WIDTH, 32)\\n" }]
'''

# The contribution of each kept change at the champion, by description.
KNOWN = {"LR 1e-2 -> 1e-3": 1.0, "WIDTH 4 -> 16": 0.0, "width at least 32 in code": 0.256}


def make_findings_repo(root: Path) -> Path:
    make_toy_repo(root, queue=QUEUE, rule="noise")
    (root / "train.py").write_text(TRAIN, encoding="utf-8")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "commit", "-qam", "two constants"], cwd=root, check=True, env=env)
    toml = root / "autoresearch.toml"
    # no smoke test: the toy ignores the smoke variables and would run whole each time
    toml.write_text(toml.read_text(encoding="utf-8") + "\n[smoke]\nenabled = false\n", encoding="utf-8")
    subprocess.run(["git", "commit", "-qam", "no smoke test"], cwd=root, check=True, env=env)
    return root
