"""The causal LM task (``task_type: causal_lm``): its data, its models and its measurements.

- data: plain text cut into ``block_size`` token blocks, chat messages or prompt/completion pairs
  (``LMDataArguments``); perplexity is measured on the validation and test texts (strided windows) and on an
  out-of-domain text when ``ood_dataset_name`` is set; chat data on its rows (completion perplexity);
- speed: greedy tokens/s at batch 1 with the KV cache (``generate``) and prompt tokens/s (``prompt``), the models
  taking turns; a latency is ms per token (1000 / tokens per s), so a budget reads as it does for classifiers;
- the search's proxy score: validation perplexity over the validation rows, whose per-row NLL sums the paired
  bootstrap resamples;
- evaluate: perplexity and bits per byte per text, speeds, size, peak memory of a fresh process, and
  lm-evaluation-harness task scores with their standard errors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ...configs import LMDataArguments
from ...errors import HfCompressError
from .base import Measurement, TaskData, TaskKind

logger = logging.getLogger(__name__)

OFFLINE_TASKS = "offline"  # EvaluateConfig.tasks: the project's own tasks, built from the run's held-out text
TASKS_FOLDER = "harness_tasks"  # under the evaluate stage's folder
NOT_SCORES = ("sample_len",)  # what the harness reports besides its metrics (kept in report.json)
LOWER_IS_BETTER = ("perplexity", "bits_per_byte")


def prepare_lm(config) -> TaskData:
    """Load and tokenize a causal LM's data before any work: ``raw`` splits, ``fmt``, ``tokenizer`` (a pad token
    given when it has none), ``splits`` (train/validation/test token rows) and ``texts`` (validation, test and
    ood texts measured with strided windows; plain text only, plus the ood text)."""
    from transformers import AutoConfig

    from ...assets import resolve_model
    from ...data.causal_lm import check_block_size, ensure_pad_token, load_lm_texts, split_text
    from ...data.lm_examples import lm_columns, lm_split_rows, load_lm_data
    from ...modeling import is_causal_lm, load_tokenizer

    data_args, name = config.data, config.pipeline.model_name_or_path
    raw, fmt = load_lm_data(data_args.dataset_name, data_args.data_format, *lm_columns(data_args).values())
    tokenizer = ensure_pad_token(load_tokenizer(name))
    model_config = AutoConfig.from_pretrained(resolve_model(name))
    if not is_causal_lm(model_config):
        raise HfCompressError(
            f"task_type causal_lm needs a causal LM; {name} is a {', '.join(model_config.architectures or ['?'])}"
        )
    check_block_size(data_args.block_size, getattr(model_config, "max_position_embeddings", None))
    rows = lm_split_rows(raw, fmt, tokenizer, data_args, ("train", "validation", "test"))
    texts = {split: split_text(raw, split) for split in ("validation", "test")} if fmt == "text" else {}
    if data_args.ood_dataset_name:
        texts["ood"] = split_text(load_lm_texts(data_args.ood_dataset_name), "test")
    if config.pipeline.selection_metric == "bits_per_byte" and fmt != "text":
        raise HfCompressError(f"selection_metric bits_per_byte needs plain text; this data is {fmt}: use perplexity")
    return TaskData(raw=raw, tokenizer=tokenizer, splits=rows, texts=texts, fmt=fmt)


def check_tasks(tasks: list[str], fmt: str) -> None:
    """Harness tasks need lm-eval; the offline ones are built from plain text."""
    if not tasks:
        return
    from ...evaluation.harness import is_lm_eval_available

    if not is_lm_eval_available():
        raise HfCompressError(
            f"evaluate tasks {', '.join(tasks)} need lm-evaluation-harness: pip install 'hfcompress[lm-eval]' "
            "(or set tasks: '' to report perplexity only)"
        )
    if OFFLINE_TASKS in tasks and fmt != "text":
        raise HfCompressError(
            f"tasks: '{OFFLINE_TASKS}' builds its tasks from plain text, and this data is {fmt}; name harness tasks "
            "instead (hellaswag, arc_easy, ...)"
        )


def evaluation_device() -> torch.device:
    """Where every PyTorch artifact is measured: the GPU when there is one (bitsandbytes artifacts load there),
    else the CPU, so the teacher and its variants are compared on one device."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_lm(folder: str | Path):
    """A model the run saved, on ``evaluation_device``: a PyTorch causal LM in fp32 (the dtype of the run's
    models), or a ``quantize`` artifact through ``load_quantized`` (ONNX Runtime artifacts run on the CPU)."""
    from ...modeling import load_causal_lm
    from ...quantization.api import RECORD, load_quantized

    if (Path(folder) / RECORD).exists():
        model = load_quantized(folder, threads=torch.get_num_threads())
    else:
        model = load_causal_lm(str(folder))
    if isinstance(model, torch.nn.Module) and not getattr(model, "is_quantized", False):
        model = model.to(evaluation_device())  # bitsandbytes models are placed by their loader and can't move
    return model


def engine(model) -> dict:
    """What a row was measured with: the dtype and device of a PyTorch model, or ONNX Runtime on the CPU."""
    if isinstance(model, torch.nn.Module):
        return {"engine": "transformers", "dtype": str(model.dtype).replace("torch.", ""),
                "device": str(next(model.parameters()).device)}  # fmt: skip
    return {"engine": "onnxruntime", "dtype": "onnx", "device": "cpu (onnxruntime)"}


def speed_source(data: TaskData, split: str):
    """What speed prompts are cut from: the split's text, else the tokens of its rows (chat data)."""
    if split in data.texts:
        return data.texts[split]
    return [t for ids in data.splits[split]["input_ids"] for t in ids]


def lm_speeds(models: dict, tokenizer, source, window: int, generate_tokens: int, prompt_batch_size: int,
              rounds: int, reload: bool = False) -> dict[str, dict]:  # fmt: skip
    """name -> greedy tokens/s at batch 1, prompt tokens/s at ``prompt_batch_size`` x ``window``, and both as ms
    per token, the models taking turns for ``rounds`` rounds (medians, with their spreads); with ``reload`` the
    values are loaders and one model is held at a time (``interleaved_speeds``)."""
    from ...evaluation.lm import interleaved_speeds

    speeds = interleaved_speeds(list(models.values()), tokenizer, source, window, generate_tokens,
                                prompt_batch_size, rounds, reload)  # fmt: skip
    return {name: add_ms_per_token(speed) for name, speed in zip(models, speeds)}


def add_ms_per_token(speed: dict) -> dict:
    """``generate_ms_per_token`` and ``prompt_ms_per_token`` (1000 / tokens per s) added to a speed row."""
    speed["generate_ms_per_token"] = 1000 / speed["generate_tokens_per_s_b1"]
    speed["prompt_ms_per_token"] = 1000 / speed["prompt_tokens_per_s"]
    return speed


def add_speedups(speed: dict, teacher: dict) -> None:
    """``speedup_generate`` and ``speedup_prompt``: a speed row's tokens/s over the teacher's."""
    speed["speedup_generate"] = speed["generate_tokens_per_s_b1"] / teacher["generate_tokens_per_s_b1"]
    speed["speedup_prompt"] = speed["prompt_tokens_per_s"] / teacher["prompt_tokens_per_s"]


def build_tasks(data: TaskData, config, folder: Path, seed: int) -> tuple[list[str], str | None]:
    """The harness tasks of ``config.tasks`` (names; 'offline' becomes the project's own tasks, written into
    ``folder`` from the test and ood texts) and the include path of the local ones."""
    from ...evaluation.harness import build_offline_tasks, offline_task_names

    tasks = [t for t in config.task_list if t != OFFLINE_TASKS]
    if OFFLINE_TASKS not in config.task_list:
        return tasks, None
    texts = {f"hfc_{split}": data.texts[split] for split in ("test", "ood") if split in data.texts}
    build_offline_tasks(folder, texts, config.task_examples, seed)
    return tasks + offline_task_names(folder), str(folder)


def measure_lm_artifacts(data: TaskData, data_args, artifacts: dict[str, str], config, folder: Path, seed: int,
                         proxies=()) -> list[dict]:  # fmt: skip
    """One row per artifact (name -> folder; the teacher first): parameters, size on disk, peak memory of a
    fresh process, ``<split>_perplexity`` and ``<split>_bits_per_byte`` per text (completion perplexity per
    split of chat rows), speeds with the models taking turns and speed-ups against the teacher, and harness task
    scores (``tasks``: {task: {metric: value, metric_stderr: ...}}) for the models the harness can run, except
    the search's ``proxies`` (briefly trained candidates: perplexity is enough to read them)."""
    from ...evaluation import gzip_size_on_disk, size_on_disk
    from ...evaluation.harness import harness_scores
    from ...evaluation.lm import rows_perplexity, strided_perplexity
    from ...modeling import count_parameters
    from ...quantization.measure import peak_memory_mb

    tokenizer = data.tokenizer
    tasks, include = build_tasks(data, config, folder / TASKS_FOLDER, seed)
    in_llama_cpp = llama_cpp_artifacts(artifacts, config, data)
    rows = []
    for name, path in artifacts.items():  # one artifact in memory at a time
        if name in in_llama_cpp:
            rows.append(llama_cpp_row(name, path, in_llama_cpp[name], data, data_args, config, rows[0]))
            if tasks:
                model = load_lm(path)
                rows[-1]["tasks"] = harness_scores(model, tokenizer, tasks, include, config.task_limit,
                                                   config.task_batch_size)  # fmt: skip
                rows[-1]["tasks_note"] = "scored in transformers, on the GGUF's weights dequantized to fp32"
                del model
            continue
        model = load_lm(path)
        pytorch = isinstance(model, torch.nn.Module)
        row = {"model": name, "parameters": count_parameters(model) if pytorch else None,
               "size_mb": size_on_disk(path) / 2**20, "gzip_size_mb": gzip_size_on_disk(path) / 2**20, **engine(model)}  # fmt: skip
        for split, text in data.texts.items():
            result = strided_perplexity(model, tokenizer, text, data_args.block_size, data_args.eval_stride,
                                        data_args.max_eval_tokens)  # fmt: skip
            row |= {f"{split}_{k}": result[k] for k in ("perplexity", "bits_per_byte", "tokens")}
        if data.fmt != "text":
            for split in ("validation", "test"):
                result = rows_perplexity(model, data.splits[split], tokenizer)
                row |= {f"{split}_{k}": result[k] for k in ("perplexity", "tokens")}
        if in_llama_cpp and not rows:  # the teacher, also in the windows llama.cpp scores
            row |= llama_windows_perplexity(model, data, data_args)
        if config.memory:
            row |= peak_memory_mb(artifacts[name], [speed_prompt_text(data)], data_args.block_size)
        if tasks and name in proxies:
            row["tasks"] = None
            row["tasks_note"] = "not scored: a search proxy"
        elif tasks and pytorch:
            row["tasks"] = harness_scores(model, tokenizer, tasks, include, config.task_limit, config.task_batch_size)
        elif tasks:
            row["tasks"] = None
            row["tasks_note"] = "not scored: the harness runs PyTorch models, and this is an ONNX Runtime model"
        rows.append(row)
        del model
    speeds = measure_speeds(data, data_args, {k: v for k, v in artifacts.items() if k not in in_llama_cpp}, config)
    teacher = speeds[rows[0]["model"]]
    for row in rows:
        row |= speeds.get(row["model"], {})
        row["size_ratio"] = rows[0]["size_mb"] / row["size_mb"]
        if row["model"] in in_llama_cpp:  # llama-bench's figures, against the teacher's in transformers
            add_speedups(add_ms_per_token(row), teacher)
    return rows


def llama_cpp_artifacts(artifacts: dict[str, str], config, data: TaskData) -> dict[str, Path]:
    """name -> GGUF file of the artifacts llama.cpp measures: GGUF ``quantize`` artifacts, under
    ``gguf_engine`` llama.cpp (or auto, with llama.cpp's tools installed), over plain text (llama-perplexity
    scores a text; chat rows' completion perplexity is measured in transformers)."""
    from ...quantization.api import gguf_file
    from ...quantization.llama_cpp_tools import tools_available

    if config.gguf_engine == "transformers" or data.fmt != "text":
        return {}
    if config.gguf_engine == "auto" and not tools_available():
        return {}
    files = {name: gguf_file(path) for name, path in list(artifacts.items())[1:]}  # never the teacher
    return {name: file for name, file in files.items() if file is not None}


def check_llama_cpp_engine(data: TaskData, data_args) -> None:
    """``gguf_engine: llama.cpp`` needs llama.cpp's tools, plain text, and two chunks of every text."""
    from ...quantization.llama_cpp_tools import INSTALL, tools_available

    if not tools_available():
        raise HfCompressError(f"gguf_engine llama.cpp needs llama.cpp's tools, which are not installed: {INSTALL}")
    if data.fmt != "text":
        raise HfCompressError(
            f"gguf_engine llama.cpp scores plain text, and this data is {data.fmt}: use gguf_engine transformers or auto"
        )
    for split, text in data.texts.items():
        tokens = len(data.tokenizer(text)["input_ids"])
        if tokens < 2 * data_args.block_size:
            raise HfCompressError(
                f"gguf_engine llama.cpp: the {split} text has {tokens} tokens, and llama-perplexity needs at least "
                f"{2 * data_args.block_size} (2 x block_size): use a longer text or gguf_engine transformers"
            )


def llama_windows_perplexity(model, data: TaskData, data_args) -> dict:
    """``<split>_perplexity_llama_cpp_windows`` (and the tokens scored) of a transformers model over the chunks
    llama-perplexity scores (``chunked_perplexity``): the reference a GGUF row measured in llama.cpp is kept
    against, since llama-perplexity can't score the strided windows."""
    from ...evaluation.lm import chunked_perplexity

    row = {}
    for split, text in data.texts.items():
        result = chunked_perplexity(model, data.tokenizer, text, data_args.block_size, llama_chunks(data_args))
        row |= {f"{split}_perplexity_llama_cpp_windows": result["perplexity"],
                f"{split}_tokens_llama_cpp_windows": result["tokens"]}  # fmt: skip
    return row


def llama_chunks(data_args) -> int | None:
    """Chunks of ``block_size`` llama-perplexity scores: as many as ``max_eval_tokens`` holds (None: all)."""
    return None if data_args.max_eval_tokens is None else max(2, data_args.max_eval_tokens // data_args.block_size)


def llama_cpp_row(name: str, path: str, gguf, data: TaskData, data_args, config, teacher: dict) -> dict:
    """A GGUF artifact measured in llama.cpp (``measure_gguf``): perplexity per text with the teacher's
    perplexity over the same chunks as the reference its ``kept`` figures divide by, prompt and greedy
    tokens/s from llama-bench, size, and the weights the file holds."""
    from ...evaluation import gzip_size_on_disk, size_on_disk
    from ...quantization.gguf_llama_cpp import gguf_parameters, measure_gguf

    figures = measure_gguf(gguf, data.texts, data_args.block_size, llama_chunks(data_args), config.generate_tokens,
                           max(3, config.latency_rounds), torch.get_num_threads())  # fmt: skip
    row = {"model": name, "parameters": gguf_parameters(gguf), "size_mb": size_on_disk(path) / 2**20,
           "gzip_size_mb": gzip_size_on_disk(path) / 2**20, "engine": "llama.cpp",
           "dtype": f"gguf {gguf.stem.rsplit('-', 1)[-1]}", "device": "cpu (llama.cpp)", **figures,
           "torch_threads": torch.get_num_threads(), "prompt_batch_size": 1,
           "memory_note": "not measured: llama.cpp runs outside this process"}  # fmt: skip
    for split in data.texts:
        row[f"{split}_perplexity_reference"] = teacher[f"{split}_perplexity_llama_cpp_windows"]
        row[f"{split}_tokens"] = row[f"{split}_tokens_reference"] = teacher[f"{split}_tokens_llama_cpp_windows"]
    return row


def measure_speeds(data: TaskData, data_args, artifacts: dict[str, str], config) -> dict[str, dict]:
    """name -> speeds and speed-ups against the first (the teacher) of ``artifacts``, measured in interleaved
    rounds with one model loaded at a time."""
    loaders = {name: (lambda p=path: load_lm(p)) for name, path in artifacts.items()}
    speeds = lm_speeds(loaders, data.tokenizer, speed_source(data, "test"), data_args.block_size,
                       config.generate_tokens, config.prompt_batch_size, config.latency_rounds, reload=True)  # fmt: skip
    teacher = speeds[next(iter(artifacts))]
    for speed in speeds.values():
        add_speedups(speed, teacher)
    return speeds


def search_counterpart(row: dict, candidates: list[dict], chosen: str | None) -> dict | None:
    """The search's row for the architecture an evaluate row measures: a trained candidate by its name, the
    distilled student by the search's choice (a pruned or quantized variant has none)."""
    by_name = {c["candidate"]: c for c in candidates}
    if row["model"].startswith("candidate "):
        return by_name.get(row["model"][len("candidate ") :])
    return by_name.get(chosen) if row.get("stage") == "student" else None


def speed_disagreement(row: dict, candidate: dict, speed: str) -> dict | None:
    """The evaluate and search speed-ups of one architecture when they differ by more than the spreads of the
    four figures behind them (relative ranges over the rounds, added up), else None."""
    if candidate.get("speed_spread") is None:
        return None
    searched, measured = candidate["speedup"], row[f"speedup_{speed}"]
    tolerance = (candidate["speed_spread"] + candidate["teacher_speed_spread"] + row[f"{speed}_spread"]
                 + row.get(f"teacher_{speed}_spread", 0.0))  # fmt: skip
    if abs(measured - searched) / searched <= tolerance:
        return None
    return {"variant": row["model"], "search_speedup": searched, "evaluate_speedup": measured,
            "tolerance": tolerance}  # fmt: skip


def check_speeds_against_search(data: TaskData, data_args, rows: list[dict], artifacts: dict, config, search_output,
                                speed: str) -> list:  # fmt: skip
    """Every variant whose speed-up disagrees with the search's beyond the spreads is measured again against
    the teacher (the two alone, interleaved, one in memory at a time); what both measurements said is returned
    for the report, and the row keeps its first figure."""
    teacher_spread = rows[0][f"{speed}_spread"]
    checks = []
    for row in rows[1:]:
        candidate = search_counterpart(row, search_output.candidates, search_output.chosen)
        found = candidate and speed_disagreement({**row, f"teacher_{speed}_spread": teacher_spread}, candidate, speed)
        if not found:
            continue
        again = measure_speeds(data, data_args, {rows[0]["model"]: artifacts[rows[0]["model"]], row["model"]: artifacts[row["model"]]},
                               config)[row["model"]]  # fmt: skip
        found["remeasured_speedup"] = again[f"speedup_{speed}"]
        found["agrees_after_remeasure"] = (
            abs(found["remeasured_speedup"] - found["search_speedup"]) / found["search_speedup"] <= found["tolerance"]
        )
        row["speed_check"] = (f"{speed} speed-up {found['evaluate_speedup']:.2f}x here, "
                              f"{found['search_speedup']:.2f}x in the search, {found['remeasured_speedup']:.2f}x re-measured")  # fmt: skip
        logger.warning("evaluate: %s: %s", row["model"], row["speed_check"])
        checks.append(found)
    return checks


def speed_prompt_text(data: TaskData) -> str:
    """A short prompt for the peak-memory process: the start of the test text, or of the first test row."""
    if "test" in data.texts:
        return data.texts["test"][:2000]
    return data.tokenizer.decode(data.splits["test"][0]["input_ids"])


def task_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """(task, metric) pairs scored for any row, in the harness's order (no standard-error keys)."""
    pairs = []
    for row in rows:
        for task, metrics in (row.get("tasks") or {}).items():
            for metric in metrics:
                if not metric.endswith("_stderr") and metric not in NOT_SCORES and (task, metric) not in pairs:
                    pairs.append((task, metric))
    return pairs


def task_table(rows: list[dict]) -> str:
    """Markdown: one row per model, one column per task metric, as 'value ± standard error'."""
    pairs = task_columns(rows)
    if not pairs:
        return ""
    lines = ["| model | " + " | ".join(f"{t} {m}" for t, m in pairs) + " |", "|---" * (len(pairs) + 1) + "|"]
    for row in rows:
        cells = []
        for task, metric in pairs:
            metrics = (row.get("tasks") or {}).get(task) or {}
            value, stderr = metrics.get(metric), metrics.get(f"{metric}_stderr")
            cells.append("-" if value is None else f"{value:.4g}" + (f" ± {stderr:.2g}" if stderr is not None else ""))
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lm_columns(data: TaskData, metric: str) -> list[tuple[str, str]]:
    """Perplexity of each split: strided over text (with bits per byte), completion perplexity over chat or
    prompt/completion rows (validation and test), and over an out-of-domain text when there is one."""
    columns = [("model", "model"), ("stage", "stage"), ("parameters", "parameters"), ("size_mb", "MB"),
               ("engine", "engine"), ("dtype", "dtype"), ("device", "device")]  # fmt: skip
    if data.fmt != "text":
        columns += [(f"{split}_perplexity", f"{split} completion ppl") for split in ("validation", "test")]
    for split in data.texts:
        columns += [(f"{split}_perplexity", f"{split} ppl"), (f"{split}_bits_per_byte", f"{split} bpb")]
    return columns + [("kept_test", f"kept (test {metric})"), ("generate_tokens_per_s_b1", "generate tok/s b1"),
                      ("generate_spread", "spread"), ("speedup_generate", "generate speed-up"),
                      ("prompt_tokens_per_s", "prompt tok/s"), ("speedup_prompt", "prompt speed-up"),
                      ("peak_rss_mb", "peak RSS (MB)"), ("model_peak_mb", "model's share (MB)"),
                      ("torch_threads", "torch threads")]  # fmt: skip


class CausalLMTask(TaskKind):
    """Decoder-only language models (``AutoModelForCausalLM``): perplexity (lower is better), tokens/s."""

    name = "causal_lm"
    default_metric = "perplexity"
    lower_is_better_metrics = LOWER_IS_BETTER
    search_metric = "perplexity"  # the proxy: validation perplexity over the validation rows
    card_task = {"task_name": "Text Generation", "task_type": "text-generation"}
    teacher_words = "adapted to"

    @property
    def data_arguments(self) -> type:
        return LMDataArguments

    def metric_names(self, data_args) -> list[str]:
        return list(LOWER_IS_BETTER)

    def check_quantize_methods(self, methods: list[str]) -> None:
        from ...quantization.config import causal_lm_refusal

        for method in methods:
            if causal_lm_refusal(method):
                raise HfCompressError(f"quantize method {method!r} {causal_lm_refusal(method)}")

    def prepare(self, config) -> TaskData:
        return prepare_lm(config)

    def load(self, folder: str, data: TaskData, for_training: bool = False):
        from ...modeling import load_causal_lm

        return load_causal_lm(str(folder))

    def calibration(self, data: TaskData, data_args):
        # the training rows as tokenized for training: text blocks, chat or prompt/completion rows
        return data.splits["train"], data_args.block_size

    def speed_text(self, budget) -> str:
        if budget.speed == "generate":
            return "per greedy token at batch 1"
        return f"per prompt token at batch {budget.budget_batch_size}"

    def timed_batch_size(self, budget) -> int:
        return 1 if budget.speed == "generate" else budget.budget_batch_size

    def candidate_latency(self, models: dict, data: TaskData, data_args, config) -> tuple[dict, dict]:
        """ms per greedy token at batch 1, or per prompt token at budget_batch_size, on the validation text."""
        prompt_batch = config.budget_batch_size if config.speed == "prompt" else 1  # only the budget's figure matters
        speeds = lm_speeds(models, data.tokenizer, speed_source(data, "validation"), data_args.block_size,
                           config.generate_tokens, prompt_batch, config.latency_rounds)  # fmt: skip
        return ({name: speed[f"{config.speed}_ms_per_token"] for name, speed in speeds.items()},
                {name: speed[f"{config.speed}_spread"] for name, speed in speeds.items()})  # fmt: skip

    def proxy_predictions(self, model, data: TaskData):
        import numpy as np

        from ...evaluation.lm import rows_nll

        return tuple(np.array(v) for v in rows_nll(model, data.splits["validation"], data.tokenizer))

    def proxy_metrics(self, data: TaskData):
        from ...evaluation.lm import perplexity_of

        return perplexity_of

    def check_evaluation(self, config, data: TaskData, data_args) -> None:
        check_tasks(config.task_list, data.fmt)
        if config.gguf_engine == "llama.cpp":
            check_llama_cpp_engine(data, data_args)

    def measure(self, ctx, artifacts: dict, config, folder: Path, search) -> Measurement:
        """``measure_lm_artifacts`` for every model of the run; variants whose speed-up disagrees with the
        search's are measured again; the harness task table."""
        data, data_args = ctx.data, ctx.config.data
        proxies = [name for name, a in artifacts.items() if a.stage == "candidate"]
        folders = {k: a.folder for k, a in artifacts.items()}
        rows = measure_lm_artifacts(data, data_args, folders, config, folder, ctx.config.pipeline.seed, proxies)
        for row in rows:  # the search's counterpart of a row is found by its stage
            row["stage"] = artifacts[row["model"]].stage
        speed_checks = []
        if search is not None:
            speed_checks = check_speeds_against_search(data, data_args, rows, folders, config, search,
                                                       search.budget.speed)  # fmt: skip
        report = {
            "speed_checks": speed_checks,
            "tasks": {"names": config.task_list, "limit": config.task_limit, "examples": config.task_examples},
            "lm": {"data_format": data.fmt, "block_size": data_args.block_size, "eval_stride": data_args.eval_stride,
                   "max_eval_tokens": data_args.max_eval_tokens, "ood_dataset": data_args.ood_dataset_name,
                   "generate_tokens": config.generate_tokens, "prompt_batch_size": config.prompt_batch_size,
                   "gguf_engine": config.gguf_engine, "llama_cpp_chunks": llama_chunks(data_args)},
        }  # fmt: skip
        cost = ("generate_ms_per_token", "the fastest in greedy tokens/s at batch 1")
        return Measurement(rows, cost, lm_columns(data, ctx.config.pipeline.selection_metric), report)

    def budget_figures(self, row: dict, budget) -> dict:
        return {"latency_ms": row[f"{budget.speed}_ms_per_token"], "speedup": row[f"speedup_{budget.speed}"]}

    def plots(self, measured: Measurement, out: Path, metric: str, search) -> list[str]:
        from ...evaluation.plots import plot_front

        plots = [str(plot_front(measured.rows, x, label, "kept_test", out / name, "model")) for x, label, name in (
            ("generate_ms_per_token", "ms per greedy token at batch 1 (CPU)", "kept_vs_generate_latency.png"),
            ("size_mb", "size on disk (MB)", "kept_vs_size.png"))]  # fmt: skip
        if search is not None:
            plots.append(str(plot_front(search.candidates, "latency_ms", "candidate ms per token", "speedup",
                                        out / "search_candidates.png", "candidate")))  # fmt: skip
        return plots

    def examples_text(self, report: dict) -> str:
        lm, first = report["lm"], report["results"][0]
        return (f"perplexity over {first.get('test_tokens')} test tokens of {report['dataset']} (window "
                f"{lm['block_size']}, stride {lm['eval_stride']}); speeds: {lm['generate_tokens']} greedy tokens at "
                f"batch 1 and {lm['prompt_batch_size']} x {lm['block_size']} prompt tokens")  # fmt: skip

    def report_sections(self, report: dict) -> list[str]:
        lines = []
        in_llama_cpp = [r["model"] for r in report["results"] if r.get("engine") == "llama.cpp"]
        if in_llama_cpp:
            lm = report["lm"]
            chunks = f"the first {lm['llama_cpp_chunks']} chunks" if lm["llama_cpp_chunks"] else "every chunk"
            lines += ["", f"Measured in llama.cpp: {', '.join(in_llama_cpp)}. Their perplexity is llama-perplexity's, "
                      f"over {chunks} of {lm['block_size']} tokens of each text (BOS first where the model adds one, "
                      "each chunk's second half scored), and their kept figures divide by the teacher's perplexity "
                      "over those same chunks (transformers); the other rows' perplexity is over strided windows. "
                      f"Their speeds are llama-bench's: greedy tokens/s at batch 1 and {lm['block_size']} prompt "
                      "tokens at batch 1, with as many threads as the other rows; the teacher's prompt figure is at "
                      f"batch {lm['prompt_batch_size']}. Peak memory is not measured for them."]  # fmt: skip
        for c in report.get("speed_checks") or []:
            after = "agrees with the search now" if c["agrees_after_remeasure"] else "**still disagrees with the search**"
            lines += ["", f"Speed check: {c['variant']} measured {c['evaluate_speedup']:.2f}x the teacher here and "
                      f"{c['search_speedup']:.2f}x in the search, more apart than the rounds' spreads allow "
                      f"({c['tolerance']:.0%}); measured again against the teacher alone: {c['remeasured_speedup']:.2f}x, "
                      f"which {after}."]  # fmt: skip
        tasks = task_table(report["results"])
        if tasks:
            lines += ["", "## Downstream tasks (lm-evaluation-harness, zero-shot; value ± standard error)", "", tasks]
            notes = {}
            for r in report["results"]:
                if r.get("tasks_note"):
                    notes.setdefault(r["tasks_note"], []).append(r["model"])
            lines += [f"\n{', '.join(models)}: {note}" for note, models in notes.items()]
        return lines
