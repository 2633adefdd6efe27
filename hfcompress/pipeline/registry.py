"""The stages of the compress pipeline, in the order they run. Each module under ``stages/`` declares its config
dataclasses and a ``StageSpec``; the parser (``config.py``) and the run loop (``run.py``) read this table
only, so a new stage is a new module and one line here."""

from .spec import StageSpec
from .stages import distill, evaluate, finetune, prune, quantize, search, share

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
