"""``python -m hack.images [--dry-run] IMAGE...``: build the images offline (hack/images/build.py)
and print the paths of their tarballs, one per line, last. ``make images``: operator and standin;
``make images-all``: trainer and server too."""

from __future__ import annotations

import argparse
import signal
import sys

from hack.images.base import BaseError
from hack.images.build import IMAGES, build
from hack.images.docker import DockerError
from hack.images.wheels import WheelError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help=f"any of: {', '.join(IMAGES)}")
    parser.add_argument("--dry-run", action="store_true", help="print the fetch and build commands, run nothing")
    args = parser.parse_args(argv)
    # A TERM (make's, a CI runner's) unwinds like Ctrl-C, so the dockerd this started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    unknown = [name for name in args.images if name not in IMAGES]
    if unknown:
        parser.error(f"no image {', '.join(unknown)}; there are {', '.join(IMAGES)}")
    try:
        tarballs = build(args.images, args.dry_run)
    except (BaseError, WheelError, DockerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not args.dry_run:
        print(*tarballs, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
