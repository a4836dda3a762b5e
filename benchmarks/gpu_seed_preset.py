"""The seed preset on one fold, as the runner runs it: steps/s, the fold's wall time, peak GPU memory, MFU.

    python benchmarks/gpu_seed_preset.py                       # 800 steps, synthetic data the seed's size
    python benchmarks/gpu_seed_preset.py --repo DIR            # a research repo prepared with --preset seed
    python benchmarks/gpu_seed_preset.py --device cpu --steps 3 --items 24 --batch 4   # on a CPU (minutes)
    python benchmarks/gpu_seed_preset.py --device cpu --steps 3 --items 24 --batch 4 --tiny   # the code path, seconds

The seed preset is ViT-S/16 at 224 px and DistilBERT-base sizes (random init: speed does not depend on
the weights), batch 48, expert probability 0.3, bf16 autocast, TF32, fused AdamW. Without ``--repo`` the
data is synthetic with the seed's fold sizes (9,893 pooled items: fold 0 trains on 6,596 and embeds 3,297).

Model FLOPs are counted with torch.utils.flop_counter on the model itself (forward and backward of one
plain step and of the expert path's extra work, at the batch's mean trimmed text lengths), so MFU =
FLOPs per step x steps/s / the device's peak bf16 rate. steps/s is the steady rate between the last two
progress lines (cuDNN/compile warm-up excluded) and the whole-run rate is printed beside it.
The goal on an H100-class GPU: 800 steps in under 60 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eclip_bench  # noqa: E402

# Dense bf16 tensor-core peaks from the vendors' data sheets (TFLOP/s); --peak-tflops overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0, "A10": 125.0}


def peak_tflops(device: str, override: float | None) -> float | None:
    if override:
        return override
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def load_train_module(repo: Path):
    sys.path.insert(0, str(repo))
    try:
        spec = importlib.util.spec_from_file_location("bench_train", repo / "train.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(repo))
    return module


def mean_trim(lengths: torch.Tensor, batch: int, limit: int, train, draws: int = 200) -> float:
    """The mean width a batch of ``batch`` random texts is trimmed to (what the training loop does)."""
    gen = torch.Generator().manual_seed(0)
    n = len(lengths)
    return sum(train.trimmed(lengths[torch.randperm(n, generator=gen)[:batch]], limit) for _ in range(draws)) / draws


def flops_per_step(train, vocab_size: int, pad_id: int, batch: int, caption_w: int, phrase_w: int) -> dict:
    """Forward+backward FLOPs of one plain step and of the expert path's extra work, counted on meta tensors."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = train.build_model(vocab_size, pad_id)
        size = train.IMAGE_SIZE
        images, heatmaps = torch.zeros(batch, 3, size, size), torch.zeros(batch, 1, size, size)
        captions = torch.full((batch, caption_w), 5, dtype=torch.long)
        phrases = torch.full((batch, phrase_w), 5, dtype=torch.long)

    def count(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn().float().sum().backward()
        return counter.get_total_flops()

    plain = count(lambda: train.info_nce(model.encode_image(images), model.encode_text(captions), model.temperature()))
    extra = count(lambda: model.encode_image(images).sum() + model.heatmap(images, heatmaps).sum()
                  + model.encode_text(phrases).sum() + model.encode_text(captions).sum())
    return {"plain": plain, "expert_extra": extra, "mean": plain + train.EXPERT_PROB * extra}


def steady_rate(stdout: str) -> float | None:
    """Steps per second between the last two progress lines."""
    marks = [(int(s), float(t)) for s, t in re.findall(r"step\s+(\d+)/\d+ .*elapsed ([0-9.]+)s", stdout)]
    if len(marks) < 2 or marks[-1][1] <= marks[-2][1]:
        return None
    return (marks[-1][0] - marks[-2][0]) / (marks[-1][1] - marks[-2][1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, help="a research repo prepared with --preset seed (default: synthetic data)")
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=48, help="BATCH_SIZE (the seed's baseline: 48)")
    ap.add_argument("--items", type=int, default=9893, help="synthetic pooled items (the seed's 9,893)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="COMPILE = True")
    ap.add_argument("--no-bf16", action="store_true", help="BF16_CUDA = BF16_CPU = False")
    ap.add_argument("--bf16-cpu", action="store_true", help="BF16_CPU = True")
    ap.add_argument("--peak-tflops", type=float, help="the device's peak bf16 TFLOP/s, for MFU")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--threads", type=int, help="AUTORESEARCH_CPUS for the run (CPU only; default: all it may use)")
    ap.add_argument("--tiny", action="store_true", help="the cpu preset's sizes instead of the seed's (tests the "
                                                       "code path in seconds; the figures mean nothing)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no GPU", file=sys.stderr)
        return 2
    preset = "cpu" if args.tiny else "seed"
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    env = {"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}
    if args.threads:
        eclip_bench.use_threads(args.threads)
    constants = {"STEPS": args.steps, "BATCH_SIZE": args.batch, "LOG_EVERY": max(1, min(100, args.steps // 4)),
                 "COMPILE": args.compile, "BF16_CUDA": not args.no_bf16, "BF16_CPU": args.bf16_cpu and not args.no_bf16}

    with tempfile.TemporaryDirectory(prefix="gpu-seed-bench-") as tmp:
        root = Path(tmp)
        if args.repo is not None:
            prepared = args.repo / ".autoresearch" / "prepared"
            if json.loads((prepared / "meta.json").read_text())["image_size"] != presets_data(preset)["image_size"]:
                print(f"error: {args.repo} was not prepared for the {preset} preset (init it with --preset {preset})",
                      file=sys.stderr)
                return 2
        else:
            data = presets_data(preset)
            print(f"writing {args.items} synthetic items at {data['image_size']} px ...", flush=True)
            prepared = eclip_bench.write_prepared(root / "state", n_items=args.items, **data)
        repo = eclip_bench.make_repo(root / "repo", preset, constants)
        facts = eclip_bench.run_fold(repo, prepared, root / "out", fold=args.fold, seed=42, env=env)

        train = load_train_module(repo)
        meta = json.loads((prepared / "meta.json").read_text())
        chunk = torch.load(prepared / f"chunk_{(args.fold + 1) % meta['n_folds']}.pt")
        pad = int(meta["pad_id"])
        cap_w = mean_trim(train.token_lengths(chunk["captions"][:, :train.TEXT_LEN], pad), args.batch, train.TEXT_LEN, train)
        phr_w = mean_trim(train.token_lengths(chunk["phrases"][:, :train.PHRASE_LEN], pad), args.batch, train.PHRASE_LEN, train)
        flops = flops_per_step(train, int(meta["vocab_size"]), pad, args.batch, round(cap_w), round(phr_w))

    rate = args.steps / facts["train_seconds"]
    steady = steady_rate(facts["stdout"]) or rate
    peak = peak_tflops(device, args.peak_tflops)
    achieved = flops["mean"] * steady / 1e12
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    rows = [
        ("device", f"{name} ({facts['threads']} CPU threads)" if device == "cpu" else name),
        ("run", f"preset {preset}, {args.steps} steps at batch {args.batch}, bf16 {facts['bf16']}, "
                f"compile {args.compile}"),
        ("steps/s (steady)", f"{steady:.2f}"),
        ("steps/s (whole run)", f"{rate:.2f}"),
        ("train seconds", f"{facts['train_seconds']:.1f}"),
        ("fold wall seconds", f"{facts['wall_s']:.1f} (set-up {facts['setup_seconds']:.1f} s before the first step)"),
        ("peak memory GiB", f"{facts['peak_memory_gb']:.2f} ({'GPU, max allocated' if device == 'cuda' else 'host RSS'})"),
        ("model GFLOPs/step", f"{flops['mean'] / 1e9:.4g} (plain {flops['plain'] / 1e9:.4g}, expert path "
                              f"+{flops['expert_extra'] / 1e9:.4g} at p={train.EXPERT_PROB}; text widths "
                              f"{cap_w:.0f}/{phr_w:.0f})"),
        ("achieved TFLOP/s", f"{achieved:.3g}"),
        ("MFU", f"{achieved / peak:.1%} of {peak:.0f} TFLOP/s bf16" if peak else "n/a (no peak known; --peak-tflops)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in rows} | {"steps_per_s": steady, "wall_s": facts["wall_s"],
                                         "peak_memory_gb": facts["peak_memory_gb"], "flops_per_step": flops["mean"],
                                         "mfu": achieved / peak if peak else None}, indent=2))
    return 0


def presets_data(preset: str) -> dict:
    from autoresearch.tasks.eclip import presets

    return presets.data_settings(preset)


if __name__ == "__main__":
    raise SystemExit(main())
