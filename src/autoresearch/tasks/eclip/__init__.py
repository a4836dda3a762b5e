"""The eCLIP task: a template research repository and the steps that set one up.

``template/`` is what a user gets: the editable ``train.py`` and ``scratchpad.md``, the fixed
``program.md``, ``autoresearch.toml``, ``queue.toml`` and the ``eclip/`` package (reader, generator,
preparation, run-time I/O). ``init_repository`` copies it, applies a size preset, commits it, and prepares
the data (synthetic unless a real Ukiyo-eVG folder is given).
"""

from __future__ import annotations

import json
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
                    say: Callable[[str], None] = print, annotations: Path | None = None,
                    images: Path | None = None, missing_images: str = "error") -> dict:
    """Create a research repository at ``dest`` and prepare its data. Returns facts for the caller.

    Real data comes from ``ukiyoe`` (a folder in the flat or the seed's layout) or from ``annotations`` and
    ``images``; without either, ``n`` synthetic prints are generated from ``seed``.
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
    check_data_options(ukiyoe, annotations, images, n=n, missing_images=missing_images)
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
        facts = prepare_data(partial, preset=preset, n=n, seed=seed, ukiyoe=ukiyoe, vocab=vocab, say=say,
                             annotations=annotations, images=images, missing_images=missing_images,
                             retry="init")
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


def check_data_options(ukiyoe: Path | None, annotations: Path | None, images: Path | None, *,
                       n: int | None = None, missing_images: str = "error") -> None:
    """Refuse contradictory or unusable data options before any work is done, naming the option."""
    from autoresearch.tasks.eclip.template.eclip import synth, ukiyoe as reader

    if missing_images not in reader.MISSING_IMAGES:
        raise UserError(f"--missing-images {missing_images}: not a choice",
                        hint=f"choose one of: {', '.join(reader.MISSING_IMAGES)}")
    if ukiyoe is not None and annotations is not None:
        raise UserError("--ukiyoe and --annotations both given",
                        hint="give --ukiyoe PATH (a folder in the flat or the seed's layout), or --annotations PATH "
                             "with --images PATH")
    if ukiyoe is None and annotations is None:
        if images is not None:
            raise UserError("--images needs --ukiyoe PATH or --annotations PATH")
        if n is not None:
            try:
                synth.split_sizes(n)
            except ValueError as exc:
                raise UserError(f"--n {n}: {exc}", hint=f"pass --n {synth.MIN_N} or more") from None
        return
    try:
        reader.locate(ukiyoe, annotations=annotations, images=images)
    except reader.DataError as exc:
        raise UserError(str(exc), hint="point --ukiyoe at the folder holding the three .jsonl files (flat) or "
                                       "annotations/Ukiyo-eVG/ and images/ (the seed's layout); or give "
                                       "--annotations PATH --images PATH") from None


def preset_of(state: Path) -> str:
    """The preset whose data settings the current prepared data has (cpu when there is none or no match)."""
    from autoresearch.tasks.eclip import presets

    meta_path = state / "prepared" / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return presets.DEFAULT_PRESET
    for name in presets.PRESETS:
        if all(meta.get(k) == v for k, v in presets.data_settings(name).items()):
            return name
    return presets.DEFAULT_PRESET


def prepare_data(dest: Path, *, preset: str | None, n: int, seed: int, ukiyoe: Path | None, vocab: Path | None,
                 say: Callable[[str], None] = print, annotations: Path | None = None, images: Path | None = None,
                 missing_images: str = "error", retry: str = "data prepare") -> dict:
    """Prepare the repository's data under ``dest/.autoresearch`` (atomically: on failure the previous prepared
    data and keys stay as they were). Synthetic data is generated first when ``n`` > 0, and the existing
    ``.autoresearch/raw`` is reused when ``n`` is 0. ``preset`` None keeps the current data's preset.
    ``retry`` is the command the error hint tells the user to run again. Returns facts, with ``summary``
    (lines saying what was dropped, kept as given and truncated)."""
    from autoresearch.tasks.eclip import presets
    from autoresearch.tasks.eclip.template.eclip import prepare, staging, synth

    state = dest / ".autoresearch"
    preset = preset or preset_of(state)
    check_data_options(ukiyoe, annotations, images, n=n or None, missing_images=missing_images)
    again = (f"fix the data named above, then run `autoresearch {retry}` again"
             + (" (nothing was created)" if retry == "init" else "; the previous prepared data is unchanged"))
    facts: dict = {"preset": preset}
    if ukiyoe is None and annotations is None:
        raw, source = state / "raw", "synthetic"
        if n:
            t0 = time.perf_counter()
            say(f"generating {n} synthetic Ukiyo-eVG prints (seed {seed})")
            facts["synth"] = synth.generate(raw, n=n, seed=seed)
            facts["synth_seconds"] = round(time.perf_counter() - t0, 1)
        elif not raw.is_dir():
            raise UserError(f"no synthetic data in {raw}",
                            hint="pass --ukiyoe PATH, or create the repository with `autoresearch init eclip`")
    else:
        raw, source = (Path(ukiyoe).resolve() if ukiyoe is not None else None), "ukiyoe"
    t0 = time.perf_counter()
    settings = presets.data_settings(preset)
    say(f"preparing {source} data at {settings['image_size']} px: vocabulary, images, heatmaps, folds, blind query sets")
    try:
        result = prepare.prepare(raw, state, vocab_path=vocab, source=source, annotations=annotations,
                                 images=images, missing_images=missing_images, **settings)
    except staging.BusyError as exc:
        raise UserError(str(exc)) from None
    except (ValueError, OSError) as exc:  # DataError is a ValueError naming file and line
        raise UserError(str(exc), hint=again) from None
    facts["prepare"] = result
    facts["summary"] = prepare.summary(result)
    facts["prepare_seconds"] = round(time.perf_counter() - t0, 1)
    return facts
