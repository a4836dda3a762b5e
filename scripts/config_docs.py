"""Write docs/configuration.md from the declarations in src/autoresearch/config.py.

    python scripts/config_docs.py           # rewrite the page
    python scripts/config_docs.py --check   # exit 1 if the committed page is out of date

tests/test_config.py runs the check, so the page never drifts from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from autoresearch.config import reference

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def main(argv: list[str]) -> int:
    text = reference()
    if "--check" in argv:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is out of date: run `python scripts/config_docs.py`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
