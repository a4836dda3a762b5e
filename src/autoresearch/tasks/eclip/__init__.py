"""The eCLIP task: a template research repository and the steps that set one up.

``template/`` is what a user gets: the editable ``train.py`` and ``scratchpad.md``, the fixed
``program.md``, ``autoresearch.toml``, ``queue.toml`` and the ``eclip/`` package (reader, generator,
preparation, run-time I/O). ``init_repository`` copies it, applies a size preset, commits it, and prepares
the data (synthetic unless a real Ukiyo-eVG folder is given).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from autoresearch.config import Config
from autoresearch.errors import UserError
from autoresearch.runner.spec import Mount
from autoresearch.scoring.sources import ECLIP_METRICS, score_eclip
from autoresearch.tasks.base import RunPlan, Task, base_env
from autoresearch.vocab import Direction

TEMPLATE = Path(__file__).parent / "template"
_SKIP = {"__pycache__", "__init__.py"}
GITIGNORE = ".autoresearch/\n/report/\n__pycache__/\n*.pyc\n"


def copy_template(dest: Path) -> list[Path]:
    copied = []
    for src in sorted(TEMPLATE.rglob("*")):
        rel = src.relative_to(TEMPLATE)
        if any(part == "__pycache__" for part in rel.parts) or (rel.name in _SKIP and rel.parent == Path(".")):
            continue
        target = dest / rel
        if src.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            copied.append(target)
    return copied


def init_repository(dest: Path, *, preset: str = "cpu", n: int = 3000, seed: int = 0,
                    ukiyoe: Path | None = None, vocab: Path | None = None,
                    say: Callable[[str], None] = print) -> dict:
    """Create a research repository at ``dest`` and prepare its data. Returns facts for the caller."""
    from autoresearch import config as config_mod
    from autoresearch.loop import fingerprints
    from autoresearch.loop.gitops import Git
    from autoresearch.tasks.eclip import presets

    if preset not in presets.PRESETS:
        raise UserError(f"unknown preset {preset!r}", hint=f"choose one of: {', '.join(presets.PRESETS)}")
    dest = Path(dest).resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"{dest} exists and is not empty", hint="choose a new folder for the research repository")
    if ukiyoe is not None and not Path(ukiyoe).is_dir():
        raise UserError(f"--ukiyoe {ukiyoe}: not a folder", hint="point it at the folder holding the three Ukiyo-eVG .jsonl files")
    # Build next to the destination and move it into place at the end, so a failure (bad data, Ctrl-C)
    # leaves no half-made repository behind and the same command can simply be run again.
    partial = dest.with_name(f".{dest.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        copy_template(partial)
        train = partial / "train.py"
        train.write_text(presets.apply_preset(train.read_text(encoding="utf-8"), preset), encoding="utf-8")
        _set_run_limits(partial / "autoresearch.toml", presets.run_settings(preset))
        (partial / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
        git = Git(partial)
        git.init()
        git.commit(["."], f"eCLIP research task (preset {preset})\n\nCreated by `autoresearch init eclip`.\n")
        facts = prepare_data(partial, preset=preset, n=n, seed=seed, ukiyoe=ukiyoe, vocab=vocab, say=say)
        if dest.exists():
            dest.rmdir()   # empty, checked above
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    fingerprints.record(config_mod.load(dest))
    return facts


def _set_run_limits(path: Path, limits: dict[str, float]) -> None:
    """Write the preset's time budget and hard timeout into the [run] table of autoresearch.toml."""
    text = path.read_text(encoding="utf-8")
    for key, value in limits.items():
        text, n = re.subn(rf"(?m)^{key}\s*=\s*[0-9.]+", f"{key} = {value:g}", text, count=1)
        if n != 1:
            raise UserError(f"{path}: no `{key} = ...` line to set for the preset")
    path.write_text(text, encoding="utf-8")


def prepare_data(dest: Path, *, preset: str, n: int, seed: int, ukiyoe: Path | None, vocab: Path | None,
                 say: Callable[[str], None] = print) -> dict:
    from autoresearch.tasks.eclip import presets
    from autoresearch.tasks.eclip.template.eclip import prepare, synth

    state = dest / ".autoresearch"
    facts: dict = {}
    if ukiyoe is None:
        raw = state / "raw"
        t0 = time.perf_counter()
        say(f"generating {n} synthetic Ukiyo-eVG prints (seed {seed})")
        facts["synth"] = synth.generate(raw, n=n, seed=seed)
        facts["synth_seconds"] = round(time.perf_counter() - t0, 1)
        source = "synthetic"
    else:
        raw, source = Path(ukiyoe).resolve(), "ukiyoe"
    t0 = time.perf_counter()
    settings = presets.data_settings(preset)
    say(f"preparing {source} data at {settings['image_size']} px: vocabulary, images, heatmaps, folds, blind query sets")
    try:
        facts["prepare"] = prepare.prepare(raw, state, vocab_path=vocab, source=source, **settings)
    except (ValueError, OSError) as exc:  # DataError is a ValueError naming file and line
        raise UserError(str(exc), hint="fix the data file named above, then run `autoresearch data prepare` again") from None
    facts["prepare_seconds"] = round(time.perf_counter() - t0, 1)
    return facts


# ---------------------------------------------------------------------------------------------- the task


class EclipTask(Task):
    """eCLIP on Ukiyo-eVG-format data: fold k trains on every chunk but k and embeds fold k's blind query
    set; the tool scores the embeddings against the hidden key.

    Only the files a run needs are mounted: the held-out chunk (which pairs images with captions), every
    key and the test split stay invisible; in final mode the run trains on all chunks and embeds the test
    query set, whose key stays hidden."""

    name = "eclip"
    summary = "CLIP with expert heatmaps on Ukiyo-eVG-format data (synthetic unless --ukiyoe PATH)"
    template = TEMPLATE
    sources = {"eclip": score_eclip}
    metric_directions = {m: (Direction.MAXIMIZE if m.startswith(("i2t_r", "t2i_r")) else Direction.MINIMIZE)
                         for m in ECLIP_METRICS}
    final_metrics = ("median_rank", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")

    def options(self) -> dict[str, Any]:
        return {"preset": "cpu", "n": 3000, "seed": 0, "ukiyoe": None, "vocab": None}

    def write(self, dest: Path, *, preset: str = "cpu", **_: Any) -> None:
        from autoresearch.tasks.eclip import presets

        if preset not in presets.PRESETS:
            raise UserError(f"unknown preset {preset!r}", hint=f"choose one of: {', '.join(presets.PRESETS)}")
        copy_template(dest)
        train = dest / "train.py"
        train.write_text(presets.apply_preset(train.read_text(encoding="utf-8"), preset), encoding="utf-8")
        _set_run_limits(dest / "autoresearch.toml", presets.run_settings(preset))
        (dest / ".gitignore").write_text(GITIGNORE, encoding="utf-8")

    def prepare(self, root: Path, *, say: Callable[[str], None] = print, preset: str = "cpu", n: int = 3000,
                seed: int = 0, ukiyoe: Path | None = None, vocab: Path | None = None, **_: Any) -> dict:
        if ukiyoe is not None and not Path(ukiyoe).is_dir():
            raise UserError(f"--ukiyoe {ukiyoe}: not a folder",
                            hint="point it at the folder holding the three Ukiyo-eVG .jsonl files")
        return prepare_data(root, preset=preset, n=n, seed=seed, ukiyoe=ukiyoe, vocab=vocab, say=say)

    def describe(self, facts: dict) -> str:
        prep = facts.get("prepare", {})
        counts = prep.get("counts", {})
        chunks = counts.get("chunks", [])
        return (f"{counts.get('train', '?')} train / {counts.get('val', '?')} val / {counts.get('test', '?')} test "
                f"images, {len(chunks)} folds of {'/'.join(str(c) for c in chunks)}, "
                f"vocabulary {prep.get('vocab_size', '?')}")

    def plan(self, config: Config, *, fold: int | None, mode: str, seed: int, out_dir: Path) -> RunPlan:
        prepared = config.state_dir / "prepared"
        secret = config.state_dir / "secret"
        chunks = sorted(prepared.glob("chunk_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        if mode == "final":
            train, queries = chunks, secret / "queries_test.pt"
        else:
            train = [c for c in chunks if c.stem != f"chunk_{fold}"]
            queries = prepared / "queries" / f"fold_{fold}.pt"
        env = base_env(config, fold=fold, mode=mode, seed=seed, out_dir=out_dir)
        env.update({
            "AUTORESEARCH_DATA": str(prepared),
            "AUTORESEARCH_TRAIN": os.pathsep.join(str(c) for c in train),
            "AUTORESEARCH_QUERIES": str(queries),
        })
        readonly = [Mount(prepared / "meta.json"), Mount(prepared / "vocab.txt"), Mount(queries)]
        readonly += [Mount(c) for c in train]
        return RunPlan(env, tuple(readonly), (config.state_dir,))


TASK = EclipTask()
