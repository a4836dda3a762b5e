"""The handwritten Ukiyo-eVG sample (tests/data/handwritten_ukiyoe) made ready to prepare: images drawn, in
the flat or the seed's layout, and a BERT-layout vocabulary that covers its words."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image
from tokenizers import normalizers, pre_tokenizers

from autoresearch.tasks.eclip.template.eclip import prepare as P
from autoresearch.tasks.eclip.template.eclip.ukiyoe import SPLIT_FILES, read_dataset

HANDWRITTEN = Path(__file__).parent / "data" / "handwritten_ukiyoe"
COLOURS = [(200, 40, 40), (40, 70, 170), (40, 130, 60), (226, 186, 40), (118, 48, 138), (230, 118, 36)]


def handwritten_copy(tmp_path: Path, layout: str = "flat") -> Path:
    """A copy under ``tmp_path/raw`` with each record's image drawn at its declared size. ``layout="seed"``
    puts train and val in annotations/Ukiyo-eVG/refined/, test in annotations/Ukiyo-eVG/, images in images/."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "images").mkdir()
    ann = raw / "annotations" / "Ukiyo-eVG" if layout == "seed" else raw
    colours = iter(COLOURS)
    for split, name in SPLIT_FILES.items():
        folder = ann / "refined" if layout == "seed" and split != "test" else ann
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(HANDWRITTEN / name, folder / name)
        for line in (HANDWRITTEN / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                Image.new("RGB", (rec["width"], rec["height"]), next(colours)).save(raw / "images" / rec["filename"])
    return raw


def hand_vocab(raw: Path, path: Path, leave_out=("geisha",)) -> list[str]:
    """A BERT-layout vocab.txt: special tokens, 1000 [unused] slots, the handwritten words (less leave_out)."""
    norm, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = set()
    for rec in read_dataset(raw, check_images=False).values():
        for r in rec:
            for text in [r.caption] + [g.phrase for g in r.regions]:
                words.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    tokens = P.SPECIAL_TOKENS + [f"[unused{i}]" for i in range(1000)] + sorted(words - set(leave_out))
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens
