"""Reader for the Ukiyo-eVG layout (ODVG JSON lines plus an images folder).

One JSON object a line::

    {"filename": str, "width": int, "height": int,
     "grounding": {"caption": str, "regions": [{"bbox": [x1, y1, x2, y2], "phrase": str}, ...]}}

Boxes are absolute pixels. Unknown fields are ignored and blank lines skipped. Boxes reaching outside the
image are clipped and counted; boxes with no area left are dropped and counted. Anything else that is wrong
raises :class:`DataError` naming ``FILE:LINE``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

SPLIT_FILES = {
    "train": "ukiyoe_vg_train_pgt_odvg.jsonl",
    "val": "ukiyoe_vg_val_pgt_odvg.jsonl",
    "test": "ukiyoe_vg_test_annotated.jsonl",
}
IMAGE_DIR = "images"


class DataError(ValueError):
    """The raw data is malformed; the message names the file (and line) and what is wrong."""


@dataclass(frozen=True)
class Region:
    """One grounded phrase; ``bbox`` is ``(x1, y1, x2, y2)`` in pixels, already clipped to the image."""

    bbox: tuple[float, float, float, float]
    phrase: str


@dataclass
class Record:
    """One image with its caption and grounded regions; ``image_path`` is where the image file was found."""

    filename: str
    width: int
    height: int
    caption: str
    regions: list[Region] = field(default_factory=list)
    image_path: Path | None = None


@dataclass
class ReadReport:
    """What reading changed, per split: records read, regions kept, boxes clipped, degenerate boxes dropped."""

    records: dict[str, int] = field(default_factory=dict)
    regions: dict[str, int] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    def add(self, split: str, records: int, regions: int, clipped: int, dropped: int) -> None:
        for table, value in ((self.records, records), (self.regions, regions),
                             (self.clipped, clipped), (self.dropped, dropped)):
            table[split] = table.get(split, 0) + value

    def summary(self) -> str:
        parts = []
        for split in self.records:
            parts.append(f"{split}: {self.records[split]} images, {self.regions[split]} regions, "
                         f"{self.clipped[split]} boxes clipped to the image, "
                         f"{self.dropped[split]} empty boxes dropped")
        return "; ".join(parts)


def _image_dirs(jsonl: Path, image_dir: Path | str | None) -> list[Path]:
    if image_dir is not None:
        return [Path(image_dir)]
    return [jsonl.parent / IMAGE_DIR, jsonl.parent]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(obj: dict, key: str, kind: type | tuple, where: str, what: str) -> object:
    if key not in obj:
        raise DataError(f"{where}: missing required field {what!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {what!r} must be {names}, got {type(value).__name__} {value!r:.60}")
    return value


def _parse_region(raw: object, i: int, width: int, height: int, where: str):
    """Return ``(Region | None, clipped)``; None when the box has no area after clipping."""
    name = f"grounding.regions[{i}]"
    if not isinstance(raw, dict):
        raise DataError(f"{where}: {name} must be an object, got {type(raw).__name__}")
    bbox = _require(raw, "bbox", list, where, f"{name}.bbox")
    phrase = _require(raw, "phrase", str, where, f"{name}.phrase")
    if len(bbox) != 4 or not all(_is_number(v) and math.isfinite(v) for v in bbox):
        raise DataError(f"{where}: {name}.bbox must be four finite numbers [x1, y1, x2, y2], got {bbox!r:.80}")
    x1, y1, x2, y2 = (float(v) for v in bbox)
    cx1, cx2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    cy1, cy2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    clipped = (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2)
    if cx2 <= cx1 or cy2 <= cy1:
        return None, clipped
    return Region((cx1, cy1, cx2, cy2), phrase), clipped


def _find_image(filename: str, dirs: list[Path], where: str) -> Path:
    for folder in dirs:
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(d) for d in dirs)
    raise DataError(f"{where}: image {filename!r} not found; searched {searched} "
                    f"(put the images in an '{IMAGE_DIR}/' folder next to the jsonl files)")


def read_split(path: Path | str, image_dir: Path | str | None = None, *, check_images: bool = True,
               report: ReadReport | None = None, split: str | None = None) -> list[Record]:
    """Read one ODVG JSON-lines file into records, clipping boxes to the image.

    Images are looked up in ``image_dir`` when given, else in ``images/`` next to the file and then next to
    the file itself. ``report`` (when given) accumulates counts under ``split`` (default: the file name).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    dirs = _image_dirs(path, image_dir)
    records: list[Record] = []
    n_regions = n_clipped = n_dropped = 0
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}: each line must be a JSON object, got {type(obj).__name__}")
            filename = _require(obj, "filename", str, where, "filename")
            if not filename.strip():
                raise DataError(f"{where}: field 'filename' is empty")
            width = _require(obj, "width", int, where, "width")
            height = _require(obj, "height", int, where, "height")
            if width <= 0 or height <= 0:
                raise DataError(f"{where}: width and height must be positive, got {width}x{height}")
            grounding = _require(obj, "grounding", dict, where, "grounding")
            caption = _require(grounding, "caption", str, where, "grounding.caption")
            raw_regions = _require(grounding, "regions", list, where, "grounding.regions")
            regions = []
            for i, raw in enumerate(raw_regions):
                region, clipped = _parse_region(raw, i, width, height, where)
                n_clipped += clipped
                if region is None:
                    n_dropped += 1
                else:
                    regions.append(region)
            image_path = _find_image(filename, dirs, where) if check_images else None
            n_regions += len(regions)
            records.append(Record(filename, width, height, caption, regions, image_path))
    if report is not None:
        report.add(split or path.name, len(records), n_regions, n_clipped, n_dropped)
    return records


def find_split_files(root: Path | str) -> dict[str, Path]:
    """The three split files under ``root``; a DataError lists any that are missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected the Ukiyo-eVG folder holding {', '.join(SPLIT_FILES.values())})")
    files = {split: root / name for split, name in SPLIT_FILES.items()}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise DataError(f"{root}: missing {', '.join(missing)} (the Ukiyo-eVG layout needs "
                        f"{', '.join(SPLIT_FILES.values())} and an '{IMAGE_DIR}/' folder)")
    return files


def read_dataset(root: Path | str, report: ReadReport | None = None, *,
                 check_images: bool = True) -> dict[str, list[Record]]:
    """Read the train, val and test splits of a Ukiyo-eVG folder; counts go into ``report`` when given."""
    files = find_split_files(root)
    return {split: read_split(path, check_images=check_images, report=report, split=split)
            for split, path in files.items()}
