"""The eCLIP task: a template research repository and the steps that set one up.

``template/`` is what a user gets: the editable ``train.py`` and ``scratchpad.md``, the fixed
``program.md``, ``autoresearch.toml``, ``queue.toml`` and the ``eclip/`` package (reader, generator,
preparation, run-time I/O). ``init_repository`` copies it, applies a size preset, commits it, and prepares
the data (synthetic unless a real Ukiyo-eVG folder is given).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Callable

from autoresearch.errors import UserError

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
                    image_weights: str | Path | None = None, text_weights: str | Path | None = None,
                    say: Callable[[str], None] = print) -> dict:
    """Create a research repository at ``dest`` and prepare its data. Returns facts for the caller.

    ``image_weights``/``text_weights`` name pretrained towers (see ``pretrained.py``); the text tower's own
    vocab.txt then tokenises the data, so ``vocab`` must be that file or absent.
    """
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
    overrides, vocab = _pretrained(image_weights, text_weights, vocab, say)
    # Build next to the destination and move it into place at the end, so a failure (bad data, Ctrl-C)
    # leaves no half-made repository behind and the same command can simply be run again.
    partial = dest.with_name(f".{dest.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        copy_template(partial)
        train = partial / "train.py"
        train.write_text(presets.apply_preset(train.read_text(encoding="utf-8"), preset, overrides), encoding="utf-8")
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


def _pretrained(image_weights, text_weights, vocab, say) -> tuple[dict, Path | None]:
    """train.py constants for the pretrained towers, and the vocabulary the data must be tokenised with."""
    from autoresearch.tasks.eclip import pretrained

    overrides: dict = {}
    if image_weights is not None:
        path = pretrained.resolve_image(image_weights)
        overrides.update(pretrained.image_constants(path))
        say(f"image tower: {path} (ViT width {overrides['VIT_WIDTH']}, depth {overrides['VIT_DEPTH']}, "
            f"patch {overrides['PATCH_SIZE']})")
    if text_weights is not None:
        folder = pretrained.resolve_text(text_weights)
        constants, own_vocab = pretrained.text_constants(folder)
        if vocab is not None and Path(vocab).resolve() != own_vocab.resolve():
            raise UserError(f"--vocab {vocab} and --text-weights {text_weights} disagree: a pretrained text tower "
                            "reads ids of its own vocabulary", hint="drop --vocab; --text-weights implies its vocab.txt")
        overrides.update(constants)
        vocab = own_vocab
        say(f"text tower: {folder} (its vocab.txt tokenises the captions)")
    return overrides, vocab


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
