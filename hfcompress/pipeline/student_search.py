"""Student search under a budget: cut candidates from the teacher over depth x FFN width x heads, measure each
one's latency once on this machine (the candidates and the teacher taking turns), drop those over budget before
any training, give each remaining one the same short distillation and score it on the validation split. The
rule (``selection``) keeps the fastest candidate whose score the best one does not beat beyond noise (a paired
bootstrap over the validation examples), or the best score.

The algorithm knows no stage and no config class: it reads a ``SearchConfig``'s fields, and the task object says
how a candidate is timed and scored (a causal LM's in ms per token and on validation perplexity).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from ..distillation import DistillationConfig, DistillationTrainer
from ..distillation.layer_maps import kept_layer_maps
from ..errors import HfCompressError
from ..evaluation.bootstrap import paired_bootstrap, share_below
from ..modeling import count_parameters, find_layer_list, keep_layers, layer_style, select_layers
from ..pruning import StructuredPruningConfig, lowest_influence_layers, structure, structured_prune
from ..pruning.structured import bert_head_pruning_supported, prune_attention_heads
from ..training_args import stage_args
from .processes import on_main
from .spec import Budget
from .tasks import TaskData, TaskKind

logger = logging.getLogger(__name__)


def weights_mb(model) -> float:
    """MB of the model's weights as stored (fp32 here); a tensor shared by two names (tied embeddings and LM
    head) counts once, as safetensors stores it."""
    seen, total = set(), 0
    for tensor in model.state_dict().values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape)
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total / 2**20


def cut_candidate(
    teacher, layers: int | str, ffn_fraction: float, head_fraction: float, importance: str, batches,
    layer_selection: str = "spread",
):  # fmt: skip
    """A student with ``layers`` of the teacher's layers (a count: evenly spread, or with ``layer_selection=
    'block_influence'`` those that change their input most; or a student_layers spec such as 'every_other' or
    '0,2,5'), ``ffn_fraction`` of the FFN neurons and ``head_fraction`` of the heads (KV groups for Llama-style)
    kept by importance; returns (model, teacher layers kept, name)."""
    now = structure(teacher)
    units, width = min(now["attention_units"]), now["intermediate_size"]
    kept = select_layers(layers, now["num_layers"])
    if layer_selection == "block_influence" and isinstance(layers, int):
        dropped = lowest_influence_layers(teacher, now["num_layers"] - layers, batches)
        kept = sorted(set(range(now["num_layers"])) - set(dropped))
    target = {
        "num_layers": len(kept),
        "attention_units": max(1, round(head_fraction * units)),
        "intermediate_size": max(1, round(ffn_fraction * width)),
    }
    config = StructuredPruningConfig(importance=importance, layer_selection="spread")
    model, _ = structured_prune(keep_layers(teacher, kept), target, config, batches)
    shape = f"ffn{target['intermediate_size']}-h{target['attention_units']}"
    name = f"L{len(kept)}-{shape}" if isinstance(layers, int) else f"layers{'-'.join(map(str, kept))}-{shape}"
    return model, kept, name


def check_grid(teacher, config) -> None:
    """Refuse a grid the teacher can't give before any work: too deep, or heads the installed transformers
    can't prune."""
    depth = teacher.config.num_hidden_layers
    for layers, _, h in config.grid:
        select_layers(layers, depth)  # raises for more layers than the teacher has, or a bad spec
        style = layer_style(find_layer_list(teacher)[1][0])
        if h < 1 and style == "bert" and not bert_head_pruning_supported(teacher):
            prune_attention_heads(teacher, {})  # raises the explanation


def measure_candidates(teacher, candidates: dict, config, task: TaskKind, data: TaskData, data_args,
                       group=None) -> list[dict]:  # fmt: skip
    """The candidate table: parameters, fp32 size, latency at the budget's batch size (causal LMs: ms per token,
    ``config.speed``), with the candidates and the teacher taking turns, speed-up against the teacher, and
    whether each is within the budget. Several processes: the main one measures while the others wait (so the
    cores are its own), and all get its figures."""
    models = {"teacher": teacher, **{name: c["model"] for name, c in candidates.items()}}
    latency, spreads = on_main(group, task.candidate_latency, models, data, data_args, config)
    budget, rows = Budget.of(config), []
    for name, c in candidates.items():
        row = {
            "candidate": name,
            "layers": c["model"].config.num_hidden_layers,
            "intermediate_size": structure(c["model"])["intermediate_size"],
            "attention_units": structure(c["model"])["attention_units"][0],
            "teacher_layers": c["kept"],
            "parameters": count_parameters(c["model"]),
            "size_mb": weights_mb(c["model"]),
            "latency_ms": latency[name],
            "teacher_latency_ms": latency["teacher"],
            "speedup": latency["teacher"] / latency[name],
            "batch_size": task.timed_batch_size(budget),
            "torch_threads": torch.get_num_threads(),
        }
        if spreads:  # how far the rounds lay apart, the candidate's and the teacher's: what evaluate checks against
            row |= {"speed_spread": spreads[name], "teacher_speed_spread": spreads["teacher"]}
        row["within_budget"] = not budget.failures(row)
        rows.append(row)
    return rows


def proxy_train(candidate, teacher, args: DistillationConfig, config, task: TaskKind, data: TaskData,
                folder: Path):  # fmt: skip
    """The same short distillation for every candidate; returns what the task scores it from on validation
    (classifiers: logits and labels; causal LMs: per-row NLL sums and token counts)."""
    stage = stage_args(
        args,
        cls=DistillationConfig,
        output_dir=folder,
        max_steps=config.proxy_steps,
        save_strategy="no",
        eval_strategy="no",
        **kept_layer_maps(args, candidate["kept"]),
    )
    trainer = DistillationTrainer(
        model=candidate["model"],
        teacher_model=teacher,
        args=stage,
        train_dataset=data.splits["train"],
        processing_class=data.tokenizer,
    )
    trainer.train()
    trainer.save_model(str(folder))
    return task.proxy_predictions(candidate["model"], data)


def search_student(teacher, config, args, task: TaskKind, data: TaskData, data_args, folder, calibration,
                   metric: str = "accuracy", group=None) -> dict:  # fmt: skip
    """Run the search (``config``: a ``SearchConfig``), scoring candidates on the validation ``metric`` (the
    task's own proxy metric when it has one: perplexity for causal LMs); returns {"candidates": rows, "chosen":
    name, "rule": text, "chosen_model": the chosen candidate's cut before training, "teacher_layers": its kept
    teacher layers}. ``group``: accelerate's state when launched as several processes."""
    metric = task.search_metric or metric
    metrics = task.proxy_metrics(data)
    budget = Budget.of(config)
    where = task.speed_text(budget)
    folder = Path(folder)
    candidates = {}
    for layers, ffn, heads in config.grid:
        model, kept, name = cut_candidate(teacher, layers, ffn, heads, config.importance, calibration,
                                          config.layer_selection)  # fmt: skip
        candidates.setdefault(name, {"model": model, "kept": kept})
    rows = measure_candidates(teacher, candidates, config, task, data, data_args, group)
    within = [r for r in rows if r["within_budget"]]
    if not within:
        fastest = min(rows, key=lambda r: r["latency_ms"])
        raise HfCompressError(
            f"no candidate meets the budget ({budget.text(where)}); the fastest, "
            f"{fastest['candidate']}, takes {fastest['latency_ms']:.1f} ms {where} ({fastest['speedup']:.2f}x, "
            f"{fastest['size_mb']:.1f} MB, {fastest['parameters']:,} parameters): relax the budget or add smaller "
            "depths/fractions"
        )
    logger.info("Search: %d of %d candidates within the budget (%s)", len(within), len(rows), budget.text(where))
    initial = {r["candidate"]: copy.deepcopy(candidates[r["candidate"]]["model"]) for r in within}
    predictions = {}
    for row in within:
        name = row["candidate"]
        predictions[name] = proxy_train(candidates[name], teacher, args, config, task, data,
                                        folder / "candidates" / name)  # fmt: skip
        row.update({f"validation_{k}": v for k, v in metrics(predictions[name]).items()})
        row["folder"] = str(folder / "candidates" / name)
        logger.info("Search: %s scored %.4f validation %s", name, row[f"validation_{metric}"], metric)
    chosen, rule = choose_candidate(within, predictions, metrics, metric, config, task.lower_is_better(metric), where)
    return {
        "candidates": rows,
        "chosen": chosen["candidate"],
        "metric": metric,
        "rule": rule,
        "chosen_model": initial[chosen["candidate"]],
        "teacher_layers": chosen["teacher_layers"],
    }


def choose_candidate(within: list[dict], predictions: dict, metrics, metric: str, config, lower: bool = False,
                     where: str | None = None):  # fmt: skip
    """The rule of ``config.selection`` over the scored rows (each gains its bootstrap standard error, the share
    of draws in which it scores worse than the best, and whether that is within noise); returns (row, rule).
    ``lower``: the metric is better when lower (perplexity); ``where``: what the budget's latency measures."""
    score, sign = f"validation_{metric}", -1 if lower else 1
    budget = Budget.of(config).text(where or f"at batch {config.budget_batch_size}")
    best = max(within, key=lambda r: (sign * r[score], -r["latency_ms"]))
    draws = paired_bootstrap(predictions, metrics, metric, config.bootstrap_samples)
    below = share_below(best["candidate"], {name: sign * values for name, values in draws.items()})
    for row in within:
        row[f"{score}_se"] = float(draws[row["candidate"]].std())
        row["share_below_best"] = below[row["candidate"]]
        row["within_noise_of_best"] = below[row["candidate"]] < config.confidence
    steps = f"after {config.proxy_steps} distillation steps"
    if config.selection == "best":
        return best, f"within the budget ({budget}), the best validation {metric} {steps} (ties: the faster)"
    tied = [r for r in within if r["within_noise_of_best"]]
    chosen = min(tied, key=lambda r: (r["latency_ms"], -sign * r[score]))
    rule = (
        f"within the budget ({budget}), the fastest candidate whose validation {metric} {steps} is "
        f"within noise of the best ({best['candidate']}, {best[score]:.4f}): it scores worse than the best in fewer than "
        f"{config.confidence:.0%} of {config.bootstrap_samples} paired bootstrap draws over the validation examples"
    )
    return chosen, rule
