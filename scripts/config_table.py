"""Rewrite the key tables of docs/config.md (and docs/schedules.md) from the schema, or check them.

Each TOML key is declared once, as an ``option(...)`` in ``hamflow.config.train_config`` /
``infer_config`` or a ``KeySpec`` of ``scheduler_config``; the tables between the
``<!-- keys:NAME begin -->`` / ``<!-- keys:NAME end -->`` comments of docs/config.md are rendered
from those declarations by :mod:`hamflow.config.key_tables`. Run this after adding or changing a key:

    python3 scripts/config_table.py            # rewrite the tables in place
    python3 scripts/config_table.py --check    # exit 1 when they are out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hamflow.config.key_tables import REGENERATE, pages, update_document

DOCS = Path(__file__).resolve().parent.parent / "docs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when out of date")
    args = parser.parse_args(argv)
    status = 0
    for page in pages():
        path = DOCS / page
        try:
            fresh = update_document(path, check=args.check)
        except ValueError as error:
            print(f"config_table: {error}", file=sys.stderr)
            status = 1
            continue
        if args.check and not fresh:
            print(f"config_table: {path}'s key tables are out of date; run {REGENERATE}", file=sys.stderr)
            status = 1
        elif not fresh:
            print(f"config_table: rewrote the key tables of {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
