"""``hfcompress`` command line: a thin layer over library calls.

hfcompress assets list
hfcompress assets fetch [NAME ...]      # all registered assets when no name is given
hfcompress compress --config PIPELINE.yaml [--output_dir DIR] [--seed N] [--overwrite_output true]
hfcompress augment --output_dir DIR [--dataset_name D] [--copies 2] [--augment_method auto] ...   # --help lists all
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
    compress = commands.add_parser("compress", help="run a compression pipeline (docs/pipeline.md)")
    compress.add_argument("--config", required=True, help="pipeline YAML (stages and their settings)")
    commands.add_parser(
        "augment", help="write augmented training text for distillation (TinyBERT-style)", add_help=False
    )
    args, rest = parser.parse_known_args(argv)
    if args.command not in ("compress", "augment") and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "compress":
            from .pipeline import run_pipeline
            from .recipe import setup_logging_and_threads

            setup_logging_and_threads()
            run_pipeline(args.config, rest)
        elif args.command == "augment":
            augment(rest)
        elif args.action == "list":
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


def augment(argv: list[str]) -> None:
    """Augment a dataset's training texts (and optional unlabelled text) into a new dataset folder."""
    from .configs import AugmentRunArguments
    from .data import load_text_classification
    from .data.augment import AugmentConfig, run_augment
    from .data.unlabelled import load_unlabelled_texts
    from .parser import parse_config
    from .recipe import setup_logging_and_threads

    run, config = parse_config((AugmentRunArguments, AugmentConfig), argv)
    setup_logging_and_threads()
    raw, _ = load_text_classification(run.dataset_name, run.text_column, run.label_column)
    texts = list(raw["train"]["text"])
    if run.unlabelled_data:
        texts += load_unlabelled_texts(run.unlabelled_data)
    texts = texts[: run.max_texts] if run.max_texts else texts
    folder = run_augment(config, texts, run.output_dir, run.seed, source=run.dataset_name)
    print(f"Wrote {folder / 'augmented.parquet'}")


if __name__ == "__main__":
    sys.exit(main())
