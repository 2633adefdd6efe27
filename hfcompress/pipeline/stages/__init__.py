"""The stages of the compress pipeline, one module each, registered here in the order they run.

Each module declares a ``StageSpec`` (``base.py``): the config dataclasses its YAML mapping is parsed into, its
runner, the typed output later stages read, the checks it needs before any work, and the models it adds to the
report. The parser, the records, the run loop and the report read this registry only: a new stage is a new
module and one line in ``REGISTRY``.
"""

from . import distill, evaluate, finetune, prune, quantize, search, share
from .base import (
    ModelOutput,
    QuantizedOutput,
    ReportOutput,
    RunContext,
    SearchOutput,
    ShareOutput,
    StageSpec,
    TeacherOutput,
)

REGISTRY: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        finetune.SPEC,
        search.SPEC,
        distill.SPEC,
        prune.SPEC,
        quantize.SPEC,
        evaluate.SPEC,
        share.SPEC,
    )
}
ORDER = tuple(REGISTRY)

__all__ = [
    "ORDER",
    "REGISTRY",
    "ModelOutput",
    "QuantizedOutput",
    "ReportOutput",
    "RunContext",
    "SearchOutput",
    "ShareOutput",
    "StageSpec",
    "TeacherOutput",
]
