"""Where a repository's data came from, kept where neither a run nor an agent can read it.

``<state>/secret/data_source.json`` records the raw folder the prepared data was made from (the synthetic
prints under ``.autoresearch/raw``, kept as ``raw`` relative to the state folder, or the absolute
``--ukiyoe`` folder) and, for synthetic data, the generator's
seed. A run that could read the raw folder, or regenerate it from the seed, could pair the blind query
sets without the key. So the seed is drawn from ``secrets`` at ``init``, the file lives in ``secret/``
(never mounted in a run, denied to agents), and ``private_paths`` gives the raw folder to the agents'
deny lists. A seed the user chose is public by definition: then the ledger's meta ``data_warning`` says that
the repository's scores are not protected against regeneration, and ``status`` and the report show it.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

FILE = Path("secret") / "data_source.json"
WARNING_KEY = "data_warning"


def draw_seed() -> int:
    """A generator seed nobody can guess (64 bits from the operating system's secure source)."""
    return secrets.randbits(64)


def public_seed_warning(seed: int) -> str:
    return (f"the synthetic data was generated from the explicit seed {seed}: a run can regenerate it and pair "
            "the blind query sets, so this repository's scores are not protected against regeneration "
            "(create it without --seed for a secret seed)")


def load(state_dir: Path) -> dict[str, Any] | None:
    path = Path(state_dir) / FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def record(state_dir: Path, *, source: str, raw: Path, seed: int | None = None,
           seed_public: bool | None = None, also: list[Path] = ()) -> dict[str, Any]:
    """Write the data source record. Preparing the same raw folder again (``data prepare``) keeps the seed
    recorded when it was generated. A raw folder inside the state folder is kept relative to it (``init``
    builds the repository elsewhere and moves it into place)."""
    raw, state = Path(raw).resolve(), Path(state_dir).resolve()
    where = raw.relative_to(state).as_posix() if raw.is_relative_to(state) else str(raw)
    old = load(state_dir) or {}
    value: dict[str, Any] = {"source": source, "raw": where}
    if also:   # the images folder given apart from the annotations
        value["also"] = [str(Path(p).resolve()) for p in also]
    if seed is not None:
        value.update(seed=int(seed), seed_public=bool(seed_public))
    elif old.get("raw") == where and "seed" in old:
        value.update(seed=old["seed"], seed_public=bool(old.get("seed_public")))
    path = Path(state_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return value


def private_paths(state_dir: Path) -> list[Path]:
    """Folders no agent may read: the raw data the prepared sets were made from (which pairs every image
    with its caption). The state folder itself is denied by the caller."""
    value = load(state_dir)
    raw = (value or {}).get("raw")
    found = [(Path(state_dir) / raw).resolve()] if isinstance(raw, str) and raw else []
    return found + [Path(p) for p in (value or {}).get("also", []) if isinstance(p, str)]
