"""The eCLIP benchmarks' code paths, run small on the CPU: the device benchmark end to end (--tiny), and
its FLOP count checked against the textbook figure for ViT-S/16."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.mark.slow
def test_gpu_benchmark_runs_on_the_cpu(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_seed_preset.py"), "--device", "cpu", "--steps", "3",
                           "--items", "24", "--batch", "4", "--tiny", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(out.read_text())
    assert figures["steps_per_s"] > 0 and figures["wall_s"] > 0 and figures["peak_memory_gb"] > 0
    assert figures["flops_per_step"] > 0 and figures["mfu"] is None        # no peak rate known for a CPU
    for row in ("steps/s (steady)", "fold wall seconds", "peak memory GiB", "MFU"):
        assert row in proc.stdout


def test_flop_count_of_the_seed_preset_matches_vit_s_and_distilbert(tmp_path):
    bench, helpers = _module("gpu_seed_preset"), _module("eclip_bench")
    repo = helpers.make_repo(tmp_path / "repo", "seed", {"EXPERT_PROB": 0.5})
    train = bench.load_train_module(repo)
    flops = bench.flops_per_step(train, 30522, 0, batch=2, caption_w=128, phrase_w=16)
    # Forward FLOPs (2 per multiply-add): ViT-S/16 at 224 px about 9.2 G per image; DistilBERT's six
    # 768-wide layers about 2 x 42.5 M x 128 tokens = 10.9 G per caption, plus attention. Backward is twice
    # the forward, so a plain step is about 3 x (9.2 + 11.2) G per pair.
    per_pair = flops["plain"] / 2 / 3 / 1e9
    assert per_pair == pytest.approx(9.2 + 11.2, rel=0.1)
    assert flops["mean"] == pytest.approx(flops["plain"] + 0.5 * flops["expert_extra"])
    assert flops["expert_extra"] > flops["plain"]     # a second image pass, the heatmap processor, two texts
