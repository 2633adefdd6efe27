"""``PruningCallback``: unstructured pruning on a schedule, as a ``TrainerCallback``.

Works with a plain ``Trainer`` and with ``DistillationTrainer`` (prune while distilling from the unpruned
teacher). After every optimizer step the masks are re-applied, so pruned weights stay zero while the rest
recover; at the scheduled steps the masks are recomputed from importance scores. Masks, accumulated scores
and the config are written into every checkpoint and restored on ``resume_from_checkpoint``; resuming with a
different config is an error. The pruned weights are plain zeros in an ordinary model, so the result saves
and loads with ``from_pretrained`` (unstructured sparsity saves no time on dense kernels: it is a size and
compression-ratio gain, not a latency gain).
"""

from __future__ import annotations

import json
import os
import re

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import HfCompressError
from ..modeling import find_layer_list, matching_linears
from .config import PruningConfig
from .masks import masks_for_sparsity, sparsity_report
from .schedules import cubic_sparsity

STATE_FILE = "pruning_state.safetensors"
CONFIG_FILE = "pruning_config.json"


def prunable_linears(model: nn.Module, pattern: str | None = None) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules to prune: those whose name matches ``pattern``, or by default every Linear
    inside the transformer layers (so embeddings and the task head are left alone)."""
    if pattern is None:
        prefix, _ = find_layer_list(model)
        pattern = rf"^{re.escape(prefix)}\."
    return matching_linears(model, pattern)


class PruningCallback(TrainerCallback):
    """Prunes the selected Linear weights to ``config.target_sparsity`` on the cubic schedule."""

    def __init__(self, config: PruningConfig):
        self.config = config
        self.modules: dict[str, nn.Linear] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.scores: dict[str, torch.Tensor] = {}  # accumulated scores for "gradient" and "movement"
        self.sparsity = 0.0  # the scheduled sparsity the current masks were made for
        self.report: dict | None = None

    # -- events ---------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.modules = prunable_linears(model, self.config.target_modules)
        self.masks = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in self.modules.items()}
        self.scores = {n: torch.zeros_like(m.weight, dtype=torch.float32) for n, m in self.modules.items()}
        if state.global_step > 0:
            self._restore(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))
        self._update(state.global_step)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # gradient: |w * grad| summed over the steps between mask updates (reset at each update);
        # movement: -w * grad summed over all steps, large when training pushes a weight away from zero.
        if self.config.method != "magnitude" and state.global_step < self.config.end_step:
            for name, module in self.modules.items():
                if module.weight.grad is not None:
                    product = (module.weight.detach() * module.weight.grad.detach()).float()
                    self.scores[name] += product.abs() if self.config.method == "gradient" else -product

    def on_step_end(self, args, state, control, **kwargs):
        self._update(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        os.makedirs(folder, exist_ok=True)
        tensors = {f"mask.{n}": m.to(torch.uint8).contiguous() for n, m in self.masks.items()}
        tensors.update({f"score.{n}": s.contiguous() for n, s in self.scores.items()})
        save_file(
            {k: v.cpu() for k, v in tensors.items()},
            os.path.join(folder, STATE_FILE),
            metadata={"sparsity": str(self.sparsity)},
        )
        with open(os.path.join(folder, CONFIG_FILE), "w") as f:
            json.dump(self.config.to_dict(), f, indent=2, sort_keys=True)

    def on_train_end(self, args, state, control, **kwargs):
        self._apply()  # make the masks permanent: the weights themselves hold the zeros
        self.report = sparsity_report({n: m.weight.detach() for n, m in self.modules.items()})

    # -- internals ------------------------------------------------------------------------------------------
    def _scheduled(self, step: int) -> float | None:
        """The scheduled sparsity at ``step`` if it differs from the current masks', else None."""
        c = self.config
        target = cubic_sparsity(
            step, c.initial_sparsity, c.target_sparsity, c.start_step, c.end_step, c.frequency
        )
        return None if target == self.sparsity else target

    @torch.no_grad()
    def _update(self, step: int) -> None:
        target = self._scheduled(step)
        if target is not None:
            if self.config.method == "magnitude":
                scores = {n: m.weight.detach().abs() for n, m in self.modules.items()}
            else:
                scores = {n: s.clone() for n, s in self.scores.items()}
            # A weight that is already pruned stays pruned: the schedule only ever raises sparsity.
            scores = {
                n: torch.where(self.masks[n], s, torch.full_like(s, -torch.inf)) for n, s in scores.items()
            }
            self.masks = masks_for_sparsity(scores, target, self.config.scope)
            self.sparsity = target
            if self.config.method == "gradient":
                for s in self.scores.values():
                    s.zero_()
        self._apply()

    @torch.no_grad()
    def _apply(self) -> None:
        for name, module in self.modules.items():
            module.weight.mul_(self.masks[name].to(module.weight.device, module.weight.dtype))

    def _restore(self, folder: str) -> None:
        state_path, config_path = os.path.join(folder, STATE_FILE), os.path.join(folder, CONFIG_FILE)
        if not os.path.exists(state_path):
            raise HfCompressError(f"resuming at {folder}, but it holds no pruning state ({STATE_FILE})")
        with open(config_path) as f:
            saved = json.load(f)
        if saved != self.config.to_dict():
            diff = sorted(k for k in saved if saved[k] != self.config.to_dict().get(k))
            raise HfCompressError(
                f"pruning config differs from the checkpoint's in {', '.join(diff)}; resume with the same config"
            )
        from safetensors import safe_open

        tensors = load_file(state_path)
        with safe_open(state_path, framework="pt") as f:
            self.sparsity = float(f.metadata()["sparsity"])
        for name, module in self.modules.items():
            self.masks[name] = tensors[f"mask.{name}"].bool().to(module.weight.device)
            self.scores[name] = tensors[f"score.{name}"].to(module.weight.device)
