"""Reader for the Ukiyo-eVG data (ODVG JSON lines plus an images folder), in either layout it ships in.

One JSON object a line::

    {"filename": str, "width": int, "height": int,
     "grounding": {"caption": str, "regions": [{"bbox": [x1, y1, x2, y2], "phrase": str}, ...]}}

Boxes are absolute pixels and are kept exactly as given (the seed does not clip them; a box reaching outside
the image, or with no area, is counted). As in the seed, a record with an empty caption or an empty region
list is dropped (counted). Unknown fields are ignored, blank lines skipped and a UTF-8 byte-order mark
accepted. Anything else that is wrong raises :class:`DataError` naming ``FILE:LINE``, and so does an image
named in two splits (a test image leaking into training, or one image on both sides of a fold).

Layouts (:func:`locate`): the flat one (the three files in one folder, images in ``images/`` beside them) and
the seed's (``annotations/Ukiyo-eVG/refined/`` for train and val, ``annotations/Ukiyo-eVG/`` for test,
``images/`` at the top), or an annotations folder and an images folder given separately.
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
SEED_ANNOTATIONS = Path("annotations") / "Ukiyo-eVG"   # the seed's prepare.py reads from here ...
REFINED = "refined"                                     # ... train and val from its refined/ subfolder
BOM = b"\xef\xbb\xbf"
MISSING_IMAGES = ("error", "black")


class DataError(ValueError):
    """The raw data is malformed; the message names the file (and line) and what is wrong."""


@dataclass(frozen=True)
class Region:
    """One grounded phrase; ``bbox`` is ``(x1, y1, x2, y2)`` in pixels exactly as the file gives it."""

    bbox: tuple[float, float, float, float]
    phrase: str


@dataclass
class Record:
    """One image with its caption and grounded regions.

    ``image_path`` is where the image file was found (None: not found, allowed by ``missing="black"``);
    ``where`` is ``FILE:LINE`` of the record, for messages.
    """

    filename: str
    width: int
    height: int
    caption: str
    regions: list[Region] = field(default_factory=list)
    image_path: Path | None = None
    where: str = ""


@dataclass
class Layout:
    """Where the three split files and the images are: ``kind`` is flat, seed or separate."""

    kind: str
    files: dict[str, Path]
    image_dirs: list[Path]

    def describe(self) -> str:
        return f"{self.kind} layout: " + ", ".join(f"{s} {p}" for s, p in self.files.items()) + \
            f"; images in {' or '.join(str(d) for d in self.image_dirs)}"


_COUNTERS = ("records", "regions", "outside", "degenerate", "no_caption", "no_regions", "duplicates")


@dataclass
class ReadReport:
    """What reading found, per split: records kept, regions, boxes reaching outside the image (kept as given),
    boxes with no area (kept, drawn at the sigma floor), records dropped for want of a caption or of regions,
    repeated filenames within the split (kept, as the seed keeps them); and by name: images not found or not
    readable (allowed only with ``missing="black"``) and the lines that repeat a filename."""

    records: dict[str, int] = field(default_factory=dict)
    regions: dict[str, int] = field(default_factory=dict)
    outside: dict[str, int] = field(default_factory=dict)
    degenerate: dict[str, int] = field(default_factory=dict)
    no_caption: dict[str, int] = field(default_factory=dict)
    no_regions: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    missing_images: list[str] = field(default_factory=list)     # "FILE:LINE: filename"
    unreadable_images: list[str] = field(default_factory=list)  # filled by preparation, same form
    duplicate_lines: list[str] = field(default_factory=list)    # each repeat within a split, same form

    def add(self, split: str, **counts: int) -> None:
        for name in _COUNTERS:
            table = getattr(self, name)
            table[split] = table.get(split, 0) + counts.get(name, 0)

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: dict(getattr(self, name)) for name in _COUNTERS}


# ---------------------------------------------------------------- where the files are

def _annotation_files(folder: Path) -> dict[str, Path]:
    """The split files of an annotations folder: train and val from ``refined/`` when it has them (the
    seed's choice), else from the folder itself; test from the folder itself."""
    files = {}
    for split, name in SPLIT_FILES.items():
        refined = folder / REFINED / name
        files[split] = refined if split != "test" and refined.is_file() else folder / name
    return files


def _complete(files: dict[str, Path]) -> bool:
    return all(p.is_file() for p in files.values())


def _expected(root: Path) -> str:
    flat = ", ".join(SPLIT_FILES.values())
    seed = SEED_ANNOTATIONS / REFINED
    return (f"expected either the flat layout ({root}/{{{flat}}} with the images in {root}/{IMAGE_DIR}/) or the "
            f"seed's ({root}/{seed}/{{{SPLIT_FILES['train']}, {SPLIT_FILES['val']}}}, "
            f"{root}/{SEED_ANNOTATIONS}/{SPLIT_FILES['test']} and the images in {root}/{IMAGE_DIR}/)")


def _missing(files: dict[str, Path]) -> str:
    return ", ".join(str(p) for p in files.values() if not p.is_file())


def locate(root: Path | str | None = None, *, annotations: Path | str | None = None,
           images: Path | str | None = None) -> Layout:
    """Find the split files and the image folder(s).

    ``root``: a folder in the flat or the seed's layout (detected; the seed's wins when both are present).
    ``annotations``: a folder holding the split files (train and val may sit in its ``refined/``), used with
    ``images`` (default: ``images/`` beside the files, then the folder itself). ``images`` alone overrides
    where a ``root``'s images are looked up.
    """
    if (root is None) == (annotations is None):
        raise DataError("give either the Ukiyo-eVG folder or an annotations folder (with an images folder), not "
                        + ("both" if root is not None else "neither"))
    extra = [Path(images)] if images is not None else None
    if extra is not None and not extra[0].is_dir():
        raise DataError(f"{images}: the images folder does not exist")
    if annotations is not None:
        ann = Path(annotations)
        if not ann.is_dir():
            raise DataError(f"{ann}: the annotations folder does not exist")
        for folder in (ann, ann / "Ukiyo-eVG", ann / SEED_ANNOTATIONS):
            files = _annotation_files(folder)
            if _complete(files):
                return Layout("separate", files, extra or [folder / IMAGE_DIR, folder])
        raise DataError(f"{ann}: no {', '.join(SPLIT_FILES.values())} found there (train and val may be in its "
                        f"{REFINED}/ subfolder, as in the seed's annotations/Ukiyo-eVG/); missing: "
                        f"{_missing(_annotation_files(ann))}")
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: not a folder; {_expected(base)}")
    seed_files = _annotation_files(base / SEED_ANNOTATIONS)
    if (base / SEED_ANNOTATIONS).is_dir():
        if _complete(seed_files):
            return Layout("seed", seed_files, extra or [base / IMAGE_DIR])
        raise DataError(f"{base}: looks like the seed's layout ({base / SEED_ANNOTATIONS} exists) but "
                        f"{_missing(seed_files)} is missing; {_expected(base)}")
    flat = _annotation_files(base)
    if _complete(flat):
        return Layout("flat", flat, extra or [base / IMAGE_DIR, base])
    raise DataError(f"{base}: missing {_missing(flat)}; {_expected(base)}")


# ---------------------------------------------------------------- one file

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


def _parse_region(raw: object, i: int, where: str) -> Region:
    name = f"grounding.regions[{i}]"
    if not isinstance(raw, dict):
        raise DataError(f"{where}: {name} must be an object, got {type(raw).__name__}")
    bbox = _require(raw, "bbox", list, where, f"{name}.bbox")
    phrase = _require(raw, "phrase", str, where, f"{name}.phrase")
    if len(bbox) != 4 or not all(_is_number(v) and math.isfinite(v) for v in bbox):
        raise DataError(f"{where}: {name}.bbox must be four finite numbers [x1, y1, x2, y2], got {bbox!r:.80}")
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return Region((x1, y1, x2, y2), phrase)


def _find_image(filename: str, dirs: list[Path]) -> Path | None:
    for folder in dirs:
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None


def _lines(path: Path):
    """``(lineno, text)`` for each line, decoded as UTF-8 (a leading byte-order mark dropped); a byte that is
    not UTF-8 is an error naming the line and the column."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not "
                                f"UTF-8; save the file as UTF-8") from None


def read_split(path: Path | str, image_dirs: list[Path] | None = None, *, check_images: bool = True,
               missing: str = "error", report: ReadReport | None = None, split: str | None = None) -> list[Record]:
    """Read one ODVG JSON-lines file into records (empty-caption and region-less records dropped).

    Images are looked up in ``image_dirs`` in order (default: ``images/`` next to the file, then next to the
    file itself). A missing image is an error naming the line, or with ``missing="black"`` (the seed's
    behaviour) a record without ``image_path``, listed in ``report.missing_images``. ``report`` accumulates
    counts under ``split`` (default: the file name).
    """
    path = Path(path)
    if missing not in MISSING_IMAGES:
        raise ValueError(f"missing={missing!r}: must be one of {', '.join(MISSING_IMAGES)}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    dirs = image_dirs if image_dirs is not None else [path.parent / IMAGE_DIR, path.parent]
    records: list[Record] = []
    seen: set[str] = set()
    n = dict.fromkeys(_COUNTERS, 0)
    for lineno, line in _lines(path):
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
        regions = [_parse_region(raw, i, where) for i, raw in enumerate(raw_regions)]
        if not caption:        # the seed's rule: `not caption` or `not regions` drops the record
            n["no_caption"] += 1
            continue
        if not regions:
            n["no_regions"] += 1
            continue
        for x1, y1, x2, y2 in (r.bbox for r in regions):
            n["outside"] += min(x1, y1) < 0 or x2 > width or y2 > height
            n["degenerate"] += x2 <= x1 or y2 <= y1
        image_path = None
        if check_images:
            image_path = _find_image(filename, dirs)
            if image_path is None:
                if missing == "error":
                    raise DataError(f"{where}: image {filename!r} not found; searched "
                                    f"{', '.join(str(d) for d in dirs)} (or pass --missing-images black to use a "
                                    f"black image, as the seed did)")
                if report is not None:
                    report.missing_images.append(f"{where}: {filename}")
        if filename in seen:
            n["duplicates"] += 1
            if report is not None:
                report.duplicate_lines.append(f"{where}: {filename}")
        seen.add(filename)
        n["regions"] += len(regions)
        records.append(Record(filename, width, height, caption, regions, image_path, where))
    n["records"] = len(records)
    if report is not None:
        report.add(split or path.name, **n)
    return records


# ---------------------------------------------------------------- the dataset

def check_disjoint(splits: dict[str, list[Record]]) -> None:
    """Refuse an image filename that occurs in two splits, naming both lines (and how many more there are)."""
    first: dict[str, Record] = {}
    owner: dict[str, str] = {}
    clashes: list[tuple[Record, Record]] = []
    for split, records in splits.items():
        mine: set[str] = set()
        for rec in records:
            if rec.filename in owner and owner[rec.filename] != split and rec.filename not in mine:
                clashes.append((first[rec.filename], rec))
            elif rec.filename not in owner:
                first[rec.filename], owner[rec.filename] = rec, split
            mine.add(rec.filename)
    if clashes:
        a, b = clashes[0]
        more = f" (and {len(clashes) - 1} more filenames shared between splits)" if len(clashes) > 1 else ""
        raise DataError(f"{a.where} and {b.where} both name image {a.filename!r}: an image in two splits leaks "
                        f"held-out data into training{more}; remove it from one of the files")


def read_dataset(root: Path | str | None = None, report: ReadReport | None = None, *, check_images: bool = True,
                 missing: str = "error", annotations: Path | str | None = None,
                 images: Path | str | None = None, layout: Layout | None = None) -> dict[str, list[Record]]:
    """Read the train, val and test splits (layout as :func:`locate` finds it); counts go into ``report``."""
    layout = layout or locate(root, annotations=annotations, images=images)
    splits = {split: read_split(path, layout.image_dirs, check_images=check_images, missing=missing,
                                report=report, split=split)
              for split, path in layout.files.items()}
    check_disjoint(splits)
    return splits
