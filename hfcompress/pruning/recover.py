"""Prune, then recover by distilling from the unpruned model (prune-then-distil, as Minitron and CoFi do).

Structured pruning alternates "prune to the next target" and "distil for a share of the epochs"; each kept
layer learns from the teacher layer it came from. Unstructured pruning is one distillation run with
``PruningCallback`` zeroing weights on its schedule. Both share one teacher-logit cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..distillation import DistillationConfig, DistillationTrainer
from ..distillation.layer_maps import kept_layer_maps
from ..training_args import stage_args
from .callback import PruningCallback
from .config import StructuredPruningConfig
from .iterative import calibration_batches, structure, structured_prune, structured_targets

logger = logging.getLogger(__name__)


def prune_and_recover(
    model, teacher, config, args, data, tokenizer, compute_metrics, out, teacher_layers=None
):
    """Prune ``model`` and recover by distilling from the unpruned ``teacher``; returns (model, trainer, details).

    ``config`` is a ``StructuredPruningConfig`` (each iteration: prune to the next target, then train; the
    ``args.num_train_epochs`` of recovery are split evenly over the iterations) or a ``PruningConfig`` (one training run with ``PruningCallback``). ``args``
    is the run's ``DistillationConfig``; every stage shares one teacher-logit cache in ``out``.
    ``teacher_layers``: the teacher layer each of ``model``'s layers came from (default: the same index, as
    when ``model`` is a copy of the teacher).
    """
    out = Path(out)
    cache = args.teacher_cache_path or str(out / "teacher_logits.safetensors")

    def distil(model, stage_dir, callbacks=None, epochs=args.num_train_epochs, kept=None):
        # a kept layer learns from the teacher layer it was (not a uniform map)
        maps = kept_layer_maps(args, kept) if kept is not None else {}
        stage = stage_args(
            args,
            cls=DistillationConfig,
            output_dir=stage_dir,
            teacher_cache_path=cache,
            num_train_epochs=epochs,
            **maps,
        )
        trainer = DistillationTrainer(
            model=model,
            teacher_model=teacher,
            args=stage,
            train_dataset=data["train"],
            eval_dataset=data["validation"],
            processing_class=tokenizer,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
        )
        trainer.train()
        return trainer

    if not isinstance(config, StructuredPruningConfig):
        callback = PruningCallback(config)
        trainer = distil(model, out / "training", [callback], kept=teacher_layers)
        return model, trainer, {"config": config.to_dict(), "sparsity": callback.report}

    calibration = calibration_batches(
        data["train"], tokenizer, args.per_device_train_batch_size, config.calibration_batches, args.seed
    )
    steps = []
    targets = structured_targets(model, config)
    # the teacher layer each remaining layer comes from
    kept = list(teacher_layers or range(model.config.num_hidden_layers))
    for k, target in enumerate(targets, start=1):
        model, removed = structured_prune(model, target, config, calibration)
        kept = [layer for i, layer in enumerate(kept) if i not in removed["layers"]]
        logger.info("Pruning iteration %d/%d removed %s; now %s", k, len(targets), removed, structure(model))
        trainer = distil(
            model, out / f"iteration-{k}", epochs=args.num_train_epochs / len(targets), kept=kept
        )
        steps.append(
            {"iteration": k, "removed": removed, "structure": structure(model), "teacher_layers": kept}
        )
    details = {
        "config": config.to_dict(),
        "iterations": steps,
        "structure": structure(model),
        "teacher_layers": kept,
    }
    return model, trainer, details
