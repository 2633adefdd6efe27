"""``hfcompress`` command line: a thin layer over library calls.

hfcompress assets list
hfcompress assets fetch [NAME ...]      # all registered assets when no name is given
"""

from __future__ import annotations

import argparse
import sys

from .assets import ASSETS, cache_dir, fetch_asset, is_fetched
from .errors import HfCompressError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hfcompress", description="Compress Hugging Face models.")
    commands = parser.add_subparsers(dest="command", required=True)
    assets = commands.add_parser("assets", help="offline copies of real models and data").add_subparsers(
        dest="action", required=True
    )
    assets.add_parser("list", help="registered assets and whether they are in the cache")
    fetch = assets.add_parser("fetch", help="download, verify and unpack assets into the cache")
    fetch.add_argument("names", nargs="*", help=f"asset names (default: all): {', '.join(ASSETS)}")
    fetch.add_argument("--force", action="store_true", help="fetch again even when a complete copy exists")
    args = parser.parse_args(argv)
    try:
        if args.action == "list":
            print(f"cache: {cache_dir()}")
            for asset in ASSETS.values():
                state = "fetched" if is_fetched(asset.name) else "not fetched"
                print(f"{asset.name:28} {asset.kind:5} {state:12} {asset.requirement}  {asset.description}")
        else:
            for name in args.names or list(ASSETS):
                print(f"{name}: {fetch_asset(name, force=args.force)}")
    except HfCompressError as err:
        print(f"hfcompress: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
