"""The steps every recipe shares: start (parse, CPU threads, logging, guards), report and share, run.

A recipe (``recipes/<job>.py``) declares its own tuple of config dataclasses, as TRL's scripts do, and reads
top to bottom: ``start_recipe`` -> data and models -> train -> measure -> ``finish_recipe``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .errors import HfCompressError
from .evaluation import write_report

logger = logging.getLogger(__name__)

REPORT_NAME = "report"


def start_recipe(config_types: tuple, default_config: str | Path, argv: list[str] | None = None):
    """Parse the recipe's YAML config (``default_config`` when no ``--config`` is given) and command-line
    overrides into ``config_types``, set up logging and CPU threads, refuse to run over a finished run, and
    check sharing settings (token included) before any work. Returns (argv as used, parsed dataclasses)."""
    from transformers import TrainingArguments

    from .hub import check_sharing
    from .parser import parse_config

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:  # no config: the offline default, with any flags applied on top
        argv = ["--config", str(default_config), *argv]
    parsed = parse_config(config_types, argv)
    recipe = parsed[0]
    args = next(p for p in parsed if isinstance(p, TrainingArguments))
    setup_logging_and_threads()
    guard_output_dir(args.output_dir, recipe.overwrite_output)
    check_sharing(recipe)
    return argv, parsed


def setup_logging_and_threads() -> None:
    """INFO logging for hfcompress, warnings only from transformers, and every physical core for PyTorch."""
    import transformers

    from .runtime import configure_cpu_threads

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    configure_cpu_threads()


def run_recipe(main, name: str) -> None:
    """Run a recipe's ``main`` as a command: bad input prints ``<name>: error: ...`` and exits with 2."""
    try:
        main()
    except HfCompressError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        sys.exit(2)


def guard_output_dir(output_dir: str | Path, overwrite: bool) -> None:
    """Refuse to run over the finished results of an earlier run unless ``overwrite`` is set."""
    report = Path(output_dir) / f"{REPORT_NAME}.json"
    if report.exists() and not overwrite:
        raise HfCompressError(
            f"{output_dir} already holds the results of a finished run ({report.name}); choose another "
            "output_dir or pass --overwrite_output true"
        )


def finish_recipe(out: str | Path, recipe, report: dict, markdown: str, variants: dict, saved: str) -> dict:
    """Write ``report.json``/``report.md``, then export/push each variant as the ``share_*`` fields ask and
    record where it went under ``report["hub"]``. ``variants`` maps a key to (folder, CompressionInfo, name
    suffix parts); ``saved`` is the last line printed (where the artifacts are)."""
    from .hub import share_variant

    write_report(out, REPORT_NAME, report, markdown)
    report["hub"] = {
        key: share_variant(recipe, folder, info, *suffix) for key, (folder, info, suffix) in variants.items()
    }
    if any(report["hub"].values()):
        write_report(out, REPORT_NAME, report, markdown)
    print("\n" + markdown + f"\n{saved}; report in {Path(out) / (REPORT_NAME + '.md')}")
    return report


def report_header(name: str, argv: list[str], data_args, raw) -> dict:
    """The fields every recipe report starts with: recipe, exact command, data, split sizes, threads."""
    from .runtime import thread_record

    return {
        "recipe": name,
        "command": " ".join([f"recipes/{name}.py", *argv]),
        "dataset": data_args.dataset_name,
        **{f"{split}_examples": len(raw[split]) for split in raw},
        "threads": thread_record(),
    }
