"""The eCLIP task: a template research repository and the steps that set one up.

``template/`` is what a user gets: the editable ``train.py`` and ``scratchpad.md``, the fixed
``program.md``, ``autoresearch.toml``, ``queue.toml`` and the ``eclip/`` package (reader, generator,
preparation, run-time I/O). ``EclipTask`` writes it with a size preset applied and prepares the data
(synthetic unless a real Ukiyo-eVG folder is given); ``autoresearch.create("eclip", DIR)`` drives it.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

from autoresearch.config import Config
from autoresearch import provenance
from autoresearch.errors import UserError
from autoresearch.runner.spec import Mount
from autoresearch.scoring.sources import RETRIEVAL_DIRECTIONS, RunRecord, Score, score_retrieval
from autoresearch.tasks.base import RunPlan, Task, base_env

TEMPLATE = Path(__file__).parent / "template"
GITIGNORE = ".autoresearch/\n/report/\n__pycache__/\n*.pyc\n"


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


def prepare_data(dest: Path, *, preset: str | None, n: int, seed: int | None, ukiyoe: Path | None,
                 vocab: Path | None, say: Callable[[str], None] = print, annotations: Path | None = None,
                 images: Path | None = None, missing_images: str = "error", retry: str = "data prepare") -> dict:
    """Prepare the repository's data under ``dest/.autoresearch`` (atomically: on failure the previous prepared
    data and keys stay as they were). Synthetic data is generated first when ``n`` > 0, from ``seed`` or,
    when it is None, from a secret seed (``autoresearch.provenance``); the existing ``.autoresearch/raw`` is
    reused when ``n`` is 0. ``preset`` None keeps the current data's preset. ``retry`` is the command the
    error hint tells the user to run again. Returns facts, with ``summary`` (lines saying what was dropped,
    kept as given and truncated) and ``warning`` when the data can be regenerated from a public seed."""
    from autoresearch.tasks.eclip import presets
    from autoresearch.tasks.eclip.template.eclip import prepare, staging, synth

    state = dest / ".autoresearch"
    preset = preset or preset_of(state)
    check_data_options(ukiyoe, annotations, images, n=n or None, missing_images=missing_images)
    again = (f"fix the data named above, then run `autoresearch {retry}` again"
             + (" (nothing was created)" if retry == "init" else "; the previous prepared data is unchanged"))
    facts: dict = {"preset": preset}
    synth_seed: int | None = None
    if ukiyoe is None and annotations is None:
        raw, source = state / "raw", "synthetic"
        if n:
            t0 = time.perf_counter()
            facts["seed_public"] = seed is not None
            synth_seed = provenance.draw_seed() if seed is None else seed   # a public seed lets a run regenerate
            say(f"generating {n} synthetic Ukiyo-eVG prints ({'seed ' + str(seed) if seed is not None else 'secret seed'})")
            facts["synth"] = synth.generate(raw, n=n, seed=synth_seed)
            facts["synth_seconds"] = round(time.perf_counter() - t0, 1)
        elif not raw.is_dir():
            raise UserError(f"no synthetic data in {raw}",
                            hint="pass --ukiyoe PATH, or create the repository with `autoresearch init eclip`")
        else:   # the same prints again: keep their seed (the swap below replaces secret/, where it is kept)
            previous = provenance.load(state) or {}
            synth_seed, facts["seed_public"] = previous.get("seed"), previous.get("seed_public")
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
    # After the swap of prepared/ and secret/: where the raw data is (for the agents' deny lists), and the
    # seed, kept secret. Preparing the same synthetic folder again keeps the recorded seed.
    private = [p for p in (raw, annotations, images) if p is not None]
    record = provenance.record(state, source=source, raw=private[0], seed=synth_seed,
                               seed_public=facts.get("seed_public"), also=private[1:])
    if source == "synthetic" and record.get("seed_public"):
        facts["warning"] = provenance.public_seed_warning(record["seed"])
    return facts


# ---------------------------------------------------------------------------------------------- the task


def key_path(config: Config, run: RunRecord) -> Path:
    """The hidden key of a run: ``secret/keys/fold_<k>.json``, or ``test.json`` in final mode."""
    keys = config.state_dir / "secret" / "keys"
    if run.mode == "final":
        return keys / "test.json"
    if run.fold is None:
        raise ValueError("a fold-mode run needs a fold index")
    return keys / f"fold_{run.fold}.json"


class EclipTask(Task):
    """eCLIP on Ukiyo-eVG-format data: fold k trains on every chunk but k and embeds fold k's blind query
    set; the tool scores the embeddings against the hidden key.

    Only the files a run needs are mounted: the held-out chunk (which pairs images with captions), every
    key and the test split stay invisible; in final mode the run trains on all chunks and embeds the test
    query set, whose key stays hidden."""

    name = "eclip"
    summary = "CLIP with expert heatmaps on Ukiyo-eVG-format data (synthetic unless --ukiyoe PATH)"
    template = TEMPLATE
    sources = {"eclip": lambda config, run: score_retrieval(config, run, key_path(config, run))}
    metric_directions = RETRIEVAL_DIRECTIONS
    final_metrics = ("median_rank", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")

    def options(self) -> dict[str, Any]:
        return {"preset": "cpu", "n": 3000, "seed": None, "ukiyoe": None, "vocab": None, "annotations": None,
                "images": None, "missing_images": "error", "image_weights": None, "text_weights": None}

    def write(self, dest: Path, *, preset: str = "cpu", n: int = 3000, ukiyoe: Path | None = None,
              annotations: Path | None = None, images: Path | None = None, missing_images: str = "error",
              vocab: Path | None = None, image_weights: str | Path | None = None,
              text_weights: str | Path | None = None, say: Callable[[str], None] = print, **_: Any) -> None:
        """The template with the preset's sizes and, for pretrained towers, their constants (every key of
        the checkpoints is checked here, before any data is prepared)."""
        from autoresearch.tasks.eclip import presets

        if preset not in presets.PRESETS:
            raise UserError(f"unknown preset {preset!r}", hint=f"choose one of: {', '.join(presets.PRESETS)}")
        check_data_options(ukiyoe, annotations, images, n=n, missing_images=missing_images)
        overrides, _ = _pretrained(image_weights, text_weights, vocab, say)
        super().write(dest)   # the template, as every task copies it
        train = dest / "train.py"
        train.write_text(presets.apply_preset(train.read_text(encoding="utf-8"), preset, overrides), encoding="utf-8")
        _set_run_limits(dest / "autoresearch.toml", presets.run_settings(preset))
        (dest / ".gitignore").write_text(GITIGNORE, encoding="utf-8")

    def prepare(self, root: Path, *, say: Callable[[str], None] = print, again: bool = False,
                preset: str | None = "cpu", n: int = 3000, seed: int | None = None, ukiyoe: Path | None = None,
                vocab: Path | None = None, annotations: Path | None = None, images: Path | None = None,
                missing_images: str = "error", text_weights: str | Path | None = None, **_: Any) -> dict:
        """At init: generate (or read) and prepare. ``again`` (`autoresearch data prepare`): prepare the
        existing synthetic data or the real data given, keeping the current preset unless one is given."""
        if text_weights is not None:   # a pretrained text tower reads ids of its own vocabulary
            vocab = _pretrained(None, text_weights, vocab, lambda _: None)[1]
        return prepare_data(root, preset=preset, n=0 if again else n, seed=seed, ukiyoe=ukiyoe, vocab=vocab,
                            say=say, annotations=annotations, images=images, missing_images=missing_images,
                            retry="data prepare" if again else "init")

    def describe(self, facts: dict) -> str:
        prep = facts.get("prepare", {})
        counts = prep.get("counts", {})
        chunks = counts.get("chunks", [])
        return (f"{counts.get('train', '?')} train / {counts.get('val', '?')} val / {counts.get('test', '?')} test "
                f"images, {len(chunks)} folds of {'/'.join(str(c) for c in chunks)}, "
                f"vocabulary {prep.get('vocab_size', '?')}")

    def brief_facts(self, config: Config) -> list[str]:
        """Gallery sizes and chance level per fold, from the prepared data's meta.json."""
        try:
            meta = json.loads((config.state_dir / "prepared" / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ["Data: not prepared yet (`autoresearch data prepare`)."]
        counts = meta.get("counts") or {}
        chunks = [int(c) for c in counts.get("chunks") or [] if isinstance(c, int)]
        if not chunks:
            return []
        pooled = sum(chunks)
        galleries = "/".join(str(c) for c in chunks)
        random_rank = "/".join(f"{(c - 1) / 2:g}" for c in chunks)
        lines = [f"Data: {pooled} image-caption pairs ({meta.get('source', '?')}), {meta.get('image_size', '?')} px "
                 f"images, captions of up to {meta.get('caption_len', '?')} tokens, a vocabulary of "
                 f"{meta.get('vocab_size', '?')}; fold k trains on the other {len(chunks) - 1} chunks "
                 f"({pooled - chunks[0]} pairs for fold 0).",
                 f"Gallery: fold k is scored on its held-out chunk of {galleries} images and as many captions; "
                 f"a random ranking scores mean rank about {random_rank} ((n - 1) / 2, 0-indexed) and R@1 about "
                 f"{100 / max(chunks):.2g}%; a perfect one scores mean rank 0."]
        return lines

    def preset(self, config: Config, name: str) -> tuple[dict[str, Any], dict[str, float]]:
        """The preset's model constants (its pretrained-weight paths left as the repository has them) and its
        run limits; the prepared data (``config``'s) must have been made for it."""
        from autoresearch.tasks.eclip import presets

        if name not in presets.PRESETS:
            raise UserError(f"unknown eCLIP preset {name!r}", hint=f"use one of: {', '.join(presets.PRESETS)}")
        have = preset_of(config.state_dir)
        if have != name:
            raise UserError(f"the prepared data of {config.root} was made for the {have!r} preset, not {name!r}",
                            hint=f"prepare another repository for it (`autoresearch init eclip DIR --preset {name}`) "
                                 "and pass --data DIR")
        constants = {k: v for k, v in presets.PRESETS[name].items() if not k.startswith("PRETRAINED_")}
        limits = {k: v for k, v in presets.run_settings(name).items() if k != "seed"}
        return constants, limits

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
