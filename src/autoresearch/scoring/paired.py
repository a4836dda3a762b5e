"""Retrieval metrics of a run's ``embeddings.npz`` when a hidden key pairs its image ids with its caption
ids. Runs inside the scoring child (``worker.compute``); the parent never loads a run's arrays."""

from __future__ import annotations

from pathlib import Path

from autoresearch.scoring.npz import EMBEDDINGS_FILE, BadEmbeddings, Limits, read_embeddings


def _index(ids, what: str) -> dict[str, int] | str:
    """Row of each id, or a reason string when the ids are not unique."""
    index: dict[str, int] = {}
    for row, value in enumerate(ids.tolist()):
        if value in index:
            return f"{what} {value!r} appears more than once in {EMBEDDINGS_FILE}"
        index[value] = row
    return index


def _compare_ids(found: dict[str, int], wanted: list[str], what: str) -> str:
    missing = [i for i in wanted if i not in found]
    extra = sorted(set(found) - set(wanted))
    if not missing and not extra:
        return ""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
    if extra:
        parts.append(f"{len(extra)} not in the query set (e.g. {extra[0]!r})")
    return f"{what} in {EMBEDDINGS_FILE} do not match the query set: " + ", ".join(parts)


def retrieval_metrics_of(out_dir: Path, image_ids: list[str], caption_ids: list[str],
                  limits: Limits = Limits()) -> dict | str:
    """Retrieval metrics of ``out_dir/embeddings.npz`` with image_ids[i] paired with caption_ids[i],
    or the reason they cannot be computed. Runs inside the scoring child (``worker.compute``)."""
    from autoresearch.scoring.retrieval import EmbeddingError, retrieval_metrics, retrieval_ranks

    try:
        arrays = read_embeddings(out_dir, len(image_ids), limits)
    except BadEmbeddings as exc:
        return str(exc)
    image_index = _index(arrays["image_ids"], "image id")
    caption_index = _index(arrays["caption_ids"], "caption id")
    for found in (image_index, caption_index):
        if isinstance(found, str):
            return found
    for found, wanted, what in ((image_index, image_ids, "image ids"), (caption_index, caption_ids, "caption ids")):
        problem = _compare_ids(found, wanted, what)
        if problem:
            return problem
    img = arrays["image_emb"][[image_index[i] for i in image_ids]]
    txt = arrays["caption_emb"][[caption_index[c] for c in caption_ids]]
    del arrays
    try:
        return retrieval_metrics(*retrieval_ranks(img, txt))
    except EmbeddingError as exc:
        return f"embeddings cannot be scored: {exc}"
