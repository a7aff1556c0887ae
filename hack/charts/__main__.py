"""`python -m hack.charts --write | --check`: regenerate the charts' derived files, or fail when they drift."""

from __future__ import annotations

import argparse
import sys

from hack.charts import generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.charts", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write every generated file")
    mode.add_argument("--check", action="store_true", help="exit 1 naming each file that differs")
    args = parser.parse_args(argv)
    files = generated.render_all()
    if args.write:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(generated.ROOT)}")
        return 0
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    for path in stale:
        print(f"{path.relative_to(generated.ROOT)} is out of date: run python -m hack.charts --write", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
