"""Strict YAML + command-line parsing of dataclass configs (as TRL's ``TrlParser``, but strict).

``parse_config((ModelArgs, DistillationConfig), argv)`` reads ``--config file.yaml`` (a flat mapping of
dataclass fields), then applies command-line flags on top. A YAML key or a flag that no dataclass defines is
an error naming the key and the closest allowed one, so configs can't drift silently. ``--help`` lists every
field with its help text; ``null`` (or ``None``) on the command line sets an optional field back to None, as
it does in YAML.
"""

from __future__ import annotations

import difflib
import sys
import typing
from dataclasses import fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .errors import HfCompressError

HELP_FLAGS = ("-h", "--help")
NULL_WORDS = ("null", "none", "~")


def known_fields(dataclass_types) -> set[str]:
    return {f.name for t in dataclass_types for f in fields(t) if f.init}


def _accept_null(parser: HfArgumentParser, dataclass_types) -> None:
    """Let an optional field (default None, or typed Optional) be set back to None from the command line:
    argparse would try ``int("null")``."""
    optional = {f.name for t in dataclass_types for f in fields(t) if f.init and f.default is None}
    for (
        t
    ) in dataclass_types:  # our Optional[...] fields with a default (HfArgumentParser rewrites Field.type)
        if issubclass(t, TrainingArguments):  # transformers' own: e.g. report_to takes the word "none"
            continue
        hints = typing.get_type_hints(t)
        optional |= {name for name, hint in hints.items() if type(None) in typing.get_args(hint)}
    for action in parser._actions:
        if action.dest in optional and action.type is not None:
            convert = action.type
            action.type = lambda value, convert=convert: (
                None if value.lower() in NULL_WORDS else convert(value)
            )
            action.type.__name__ = getattr(convert, "__name__", "value")  # argparse names it in errors


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file; a missing file, invalid YAML or anything but a mapping is an error."""
    path = Path(path)
    if not path.is_file():
        raise HfCompressError(f"config file {str(path)!r} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise HfCompressError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise HfCompressError(
            f"config file {path} must be a mapping of field: value, got {type(values).__name__}"
        )
    return values


def check_keys(values: dict, allowed: set[str], where: str) -> None:
    """An unknown key is an error naming where it was and the closest allowed key."""
    for key in values:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise HfCompressError(f"unknown key {key!r} in {where}{hint}")


def load_yaml_config(path: str | Path, dataclass_types) -> dict:
    """Read a flat YAML mapping and check every key against the dataclasses' fields."""
    values = read_yaml(path)
    check_keys(values, known_fields(dataclass_types), str(path))
    return values


def parse_config(dataclass_types, argv: list[str] | None = None, defaults: dict | None = None):
    """Instances of ``dataclass_types`` from YAML defaults (``--config``, or ``defaults`` already read and
    checked) and command-line overrides."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise HfCompressError("--config needs a YAML file path")
        config_path = argv[i + 1]
        del argv[i : i + 2]
    parser = HfArgumentParser(dataclass_types)
    _accept_null(parser, dataclass_types)
    if defaults:
        parser.set_defaults(**defaults)
    if config_path is not None:
        values = load_yaml_config(config_path, dataclass_types)
        # YAML lists/dicts become defaults as they are; argparse only converts strings from the command line.
        parser.set_defaults(**values)
    unknown = [
        a.split("=")[0]
        for a in argv
        if a.startswith("--")
        and a not in HELP_FLAGS
        and a.split("=")[0][2:].replace("-", "_") not in known_fields(dataclass_types)
    ]
    if unknown:
        close = difflib.get_close_matches(unknown[0][2:], known_fields(dataclass_types), n=1)
        hint = f" (did you mean --{close[0]}?)" if close else ""
        raise HfCompressError(f"unknown option {unknown[0]}{hint}")
    return parser.parse_args_into_dataclasses(args=argv)
