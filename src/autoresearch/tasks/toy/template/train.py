"""A toy research script in Karpathy's style: it prints its validation metric, and the tool reads it.

val_bpb is a known function of the constants: (log10(LR) + 3)^2 + (WIDTH - 32)^2 / 1000 + 1, plus a
little fold/seed noise. The optimum is LR = 1e-3 and WIDTH = 32, so you can watch the loop find it.
"""
import math
import os
import random
import time

LR = 0.01  # learning rate
WIDTH = 4  # model width
SEED = 0  # random seed
SLEEP = 0.2  # seconds of pretend training

fold = int(os.environ.get("AUTORESEARCH_FOLD") or 0)
seed = int(os.environ.get("AUTORESEARCH_SEED") or 0) + SEED
rng = random.Random(seed * 1000 + fold)
target = (math.log10(LR) + 3) ** 2 + (WIDTH - 32) ** 2 / 1000 + 1.0
for step in range(1, 5):
    time.sleep(SLEEP / 4)
    print(f"step {step}/4 loss {target + 1.0 / step:.4f}", flush=True)
print(f"val_bpb: {target + rng.gauss(0, 0.01):.6f}")
