"""The compress pipeline with ``task_type: causal_lm`` on a tiny random Llama with a real byte-level BPE: every
stage end to end, the report's figures recomputed here from the saved models, the harness's task scores, the
shipped variant reloading with plain transformers, a killed training stage resuming to the same weights, and
bad input refused before any work."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SENTENCES, held_out_text, make_bpe_tokenizer, make_llama, run_pipeline_killed_at_step
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfcompress import HfCompressError
from hfcompress.evaluation.harness import is_lm_eval_available
from hfcompress.evaluation.lm import rows_perplexity, strided_perplexity
from hfcompress.pipeline import load_pipeline_config, run_pipeline
from hfcompress.quantization.backends import is_optimum_onnx_available

FAST_EVAL = {"latency_rounds": 1, "generate_tokens": 4, "prompt_batch_size": 2, "memory": False, "plots": False}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny Llama teacher with its BPE tokenizer; text split into train/validation/test files; chat rows."""
    root = tmp_path_factory.mktemp("lm_pipeline")
    tokenizer = make_bpe_tokenizer(root / "teacher")
    make_llama(num_layers=4, vocab_size=len(tokenizer)).save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    (root / "text").mkdir()
    for split, count, seed in (("train", 40, 0), ("validation", 12, 1), ("test", 12, 2)):
        (root / "text" / f"{split}.txt").write_text(held_out_text(count, seed))
    (root / "chat").mkdir()
    for split in ("train", "validation", "test"):
        rows = [{"messages": [{"role": "user", "content": "What did she say?"},
                              {"role": "assistant", "content": s}]} for s in SENTENCES]  # fmt: skip
        (root / "chat" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_config(folder: Path, assets: Path, stages: list, dataset="text", **top) -> Path:
    config = {
        "output_dir": str(folder / "out"),
        "model_name_or_path": str(assets / "teacher"),
        "task_type": "causal_lm",
        "data": {"dataset_name": str(assets / dataset), "block_size": 32, "eval_stride": 32,
                 "ood_dataset_name": None, "max_eval_tokens": 256},  # fmt: skip
        "training": {"per_device_train_batch_size": 4, "report_to": "none", "disable_tqdm": True, "save_steps": 2,
                     "logging_steps": 50},  # fmt: skip
        "stages": stages,
        **top,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.onnx
@pytest.mark.skipif(not is_optimum_onnx_available(), reason="needs the [onnx] extra")
@pytest.mark.skipif(not is_lm_eval_available(), reason="needs the [lm-eval] extra")
def test_lm_pipeline_end_to_end(assets, tmp_path):
    stages = [
        {"finetune": {"num_train_epochs": 1, "use_lora": True, "lora_r": 4}},
        {"search": {"depths": "2,3", "ffn_fractions": "1.0,0.5", "proxy_steps": 3, "layer_selection": "block_influence",
                    "importance": "activation", "calibration_batches": 2, "latency_rounds": 1, "generate_tokens": 4,
                    "max_parameters": 40000}},  # fmt: skip
        {"distill": {"num_train_epochs": 1}},
        {"quantize": {"methods": "onnx-int8-dynamic"}},
        {"evaluate": {"tasks": "offline", "task_examples": 6, **FAST_EVAL}},
        {"share": {"share_export_dir": str(tmp_path / "shipped")}},
    ]
    report = run_pipeline(write_config(tmp_path, assets, stages))
    out = tmp_path / "out"
    rows = {r["model"]: r for r in report["results"]}
    assert report["task_type"] == "causal_lm" and report["selection_metric"] == "perplexity"
    assert list(rows)[0] == "teacher" and {"student", "student onnx-int8-dynamic"} <= set(rows)
    tokenizer = AutoTokenizer.from_pretrained(assets / "teacher")
    test_text = (assets / "text" / "test.txt").read_text()

    # the search: every candidate within the parameter budget; its proxy score is the perplexity of its saved
    # model over the validation rows, recomputed here
    search = report["search"]
    assert all(c["within_budget"] == (c["parameters"] <= 40000) for c in search["candidates"])
    scored = [c for c in search["candidates"] if c.get("folder")]
    assert scored and all(c["within_budget"] for c in scored)
    from hfcompress.data.lm_examples import lm_examples

    validation = lm_examples(
        __import__("datasets").Dataset.from_dict({"text": [(assets / "text" / "validation.txt").read_text()]}),
        tokenizer, 32, data_format="text", max_tokens=256,
    )  # fmt: skip
    for row in scored[:2]:
        # fp32 size: the tied embedding and LM head count once, as in the saved file
        saved = (Path(row["folder"]) / "model.safetensors").stat().st_size / 2**20
        assert row["size_mb"] == pytest.approx(saved, rel=0.05)  # the header aside; the head twice would be +45%
        model = AutoModelForCausalLM.from_pretrained(row["folder"])
        assert rows_perplexity(model, validation, tokenizer)["perplexity"] == pytest.approx(
            row["validation_perplexity"], rel=1e-5
        )

    # the report's perplexity of the student is that of the saved student, measured here
    student = AutoModelForCausalLM.from_pretrained(rows["student"]["folder"])
    assert student.config.num_hidden_layers == next(c for c in search["candidates"]
                                                    if c["candidate"] == search["chosen"])["layers"]  # fmt: skip
    expected = strided_perplexity(student, tokenizer, test_text, 32, 32, 256)
    assert rows["student"]["test_perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    assert rows["student"]["test_bits_per_byte"] == pytest.approx(expected["bits_per_byte"], rel=1e-5)
    teacher = rows["teacher"]
    assert rows["student"]["kept_test"] == pytest.approx(teacher["test_perplexity"] / expected["perplexity"])

    # task scores: the offline tasks, with standard errors, as the harness gives them for the saved student
    from hfcompress.evaluation.harness import harness_scores, offline_task_names

    tasks = out / "evaluate" / "harness_tasks"
    assert offline_task_names(tasks) == ["hfc_test_cloze", "hfc_test_final_word"]
    again = harness_scores(student, tokenizer, offline_task_names(tasks), tasks)
    assert rows["student"]["tasks"]["hfc_test_cloze"]["acc"] == again["hfc_test_cloze"]["acc"]
    assert "acc_stderr" in rows["student"]["tasks"]["hfc_test_cloze"]
    assert rows["student onnx-int8-dynamic"]["tasks"] is None  # the harness runs PyTorch models only
    markdown = (out / "report.md").read_text()
    assert "## Downstream tasks" in markdown and "hfc_test_cloze acc" in markdown

    # the rule: among compressed variants with validation perplexity <= the teacher's / min_kept, the fastest
    bound = teacher["validation_perplexity"] / 0.99
    eligible = [r for r in report["results"][1:] if r["stage"] != "candidate" and r["validation_perplexity"] <= bound]
    expected_choice = min(eligible, key=lambda r: r["generate_ms_per_token"])["model"] if eligible else None
    assert report["chosen"] == expected_choice
    if report["chosen"] is not None:
        shipped = next((tmp_path / "shipped").iterdir())
        card = (shipped / "README.md").read_text()
        assert "pipeline_tag: text-generation" in card and "| hfc_test_cloze | acc |" in card
        chosen = rows[report["chosen"]]
        if chosen["stage"] == "quantized":
            from optimum.onnxruntime import ORTModelForCausalLM

            model = ORTModelForCausalLM.from_pretrained(shipped, file_name="model_quantized.onnx")
        else:
            model = AutoModelForCausalLM.from_pretrained(shipped)
        shipped_ppl = strided_perplexity(model, AutoTokenizer.from_pretrained(shipped), test_text, 32, 32, 256)
        assert shipped_ppl["perplexity"] == pytest.approx(chosen["test_perplexity"], rel=1e-4)


@pytest.mark.parametrize("stage", ["distill", "finetune"])
def test_killed_lm_training_stage_resumes_to_the_same_weights(assets, tmp_path, stage):
    stages = [{"distill": {"num_train_epochs": 2, "student_layers": "2"}} if stage == "distill"
              else {"finetune": {"num_train_epochs": 2}}, {"evaluate": FAST_EVAL}]  # fmt: skip
    run_pipeline(write_config(tmp_path / "a", assets, stages))
    killed = write_config(tmp_path / "b", assets, stages)
    result = run_pipeline_killed_at_step(killed, 5)
    assert result.returncode == -9, result.stderr[-2000:]
    out = tmp_path / "b" / "out"
    assert (out / stage / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()
    report = run_pipeline(killed)
    assert report["stages"][0]["resumed_from"].endswith("checkpoint-4")
    from safetensors.torch import load_file

    a = load_file(tmp_path / "a" / "out" / stage / "model" / "model.safetensors")
    b = load_file(out / stage / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_chat_data_prune_and_completion_perplexity(assets, tmp_path):
    """Chat rows: perplexity over the assistant tokens of each split; the prune stage shrinks the FFN."""
    stages = [{"prune": {"prune_ffn_fraction": 0.5, "num_train_epochs": 1}}, {"evaluate": FAST_EVAL}]
    report = run_pipeline(write_config(tmp_path, assets, stages, dataset="chat"))
    rows = {r["model"]: r for r in report["results"]}
    pruned = AutoModelForCausalLM.from_pretrained(rows["pruned"]["folder"])
    assert pruned.config.intermediate_size == 32
    from hfcompress.data.lm_examples import lm_examples

    tokenizer = AutoTokenizer.from_pretrained(assets / "teacher")
    test = lm_examples(__import__("datasets").load_dataset("json", data_files=str(assets / "chat" / "test.jsonl"))["train"],
                       tokenizer, 32, data_format="messages")  # fmt: skip
    assert rows["pruned"]["test_perplexity"] == pytest.approx(rows_perplexity(pruned, test, tokenizer)["perplexity"],
                                                              rel=1e-5)  # fmt: skip
    assert "test_bits_per_byte" not in rows["pruned"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"stages": [{"quantize": {"methods": "onnx-int8-static"}}]},
         "quantize method 'onnx-int8-static' is for classifiers; a causal LM takes bnb-int8"),
        ({"data": {"max_seq_length": 64}}, "max_seq_length"),
        ({"selection_metric": "accuracy"}, "selection_metric 'accuracy' is not among the metrics the causal_lm task "
                                           "reports \\(perplexity, bits_per_byte\\)"),
        ({"stages": [{"search": {"speed": "decode"}}, "distill"]}, "speed must be one of generate, prompt"),
    ],
)  # fmt: skip
def test_bad_lm_configs_are_refused_at_parse_time(assets, tmp_path, change, message):
    path = write_config(tmp_path, assets, [{"evaluate": FAST_EVAL}])
    config = yaml.safe_load(path.read_text())
    for key, value in change.items():
        config[key] = {**config[key], **value} if key == "data" else value
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(HfCompressError, match=message):
        load_pipeline_config(path)


def test_bad_lm_input_is_refused_before_any_work(assets, tmp_path, monkeypatch):
    # offline tasks are built from plain text; chat data needs harness tasks by name
    path = write_config(tmp_path / "a", assets, [{"evaluate": {"tasks": "offline"}}], dataset="chat")
    if is_lm_eval_available():
        with pytest.raises(HfCompressError, match="tasks: 'offline' builds its tasks from plain text, and this data is messages"):
            run_pipeline(path)
    # without lm-eval the stage says how to install it
    import hfcompress.evaluation.harness as harness

    monkeypatch.setattr(harness, "is_lm_eval_available", lambda: False)
    path = write_config(tmp_path / "b", assets, [{"evaluate": {"tasks": "offline"}}])
    with pytest.raises(HfCompressError, match=r"pip install 'hfcompress\[lm-eval\]'"):
        run_pipeline(path)
    # bits per byte needs text; a block longer than the model's positions; a classifier is not a causal LM
    path = write_config(tmp_path / "c", assets, [{"evaluate": FAST_EVAL}], dataset="chat", selection_metric="bits_per_byte")
    with pytest.raises(HfCompressError, match="selection_metric bits_per_byte needs plain text; this data is messages"):
        run_pipeline(path)
    config = yaml.safe_load(path.read_text())
    config["data"] |= {"block_size": 512, "eval_stride": 512, "max_eval_tokens": None, "dataset_name": str(assets / "text")}
    config["selection_metric"] = "perplexity"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(HfCompressError, match="block_size 512 is longer than the model's 256 positions"):
        run_pipeline(path)
    from conftest import make_bert, make_tokenizer

    make_bert(num_layers=2, tokenizer=make_tokenizer(tmp_path)).save_pretrained(tmp_path / "bert")
    make_tokenizer(tmp_path).save_pretrained(tmp_path / "bert")
    config["data"] |= {"block_size": 32, "eval_stride": 32}
    config["model_name_or_path"] = str(tmp_path / "bert")
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(HfCompressError, match="task_type causal_lm needs a causal LM; .* is a BertForSequenceClassification"):
        run_pipeline(path)
    for folder in ("a", "b", "c"):
        assert not (tmp_path / folder / "out").exists()


def test_gguf_engine_llama_cpp_is_refused_before_any_work_where_it_cant_measure(assets, tmp_path, monkeypatch):
    """``gguf_engine: llama.cpp`` needs its tools, plain text and two chunks of block_size in every text."""
    import hfcompress.quantization.llama_cpp_tools as tools

    evaluate = {"evaluate": {**FAST_EVAL, "gguf_engine": "llama.cpp"}}
    monkeypatch.setattr(tools, "tools_available", lambda: False)
    with pytest.raises(HfCompressError, match="gguf_engine llama.cpp needs llama.cpp's tools, which are not installed: run `make setup-llama-tools`"):
        run_pipeline(write_config(tmp_path / "a", assets, [evaluate]))
    monkeypatch.setattr(tools, "tools_available", lambda: True)
    with pytest.raises(HfCompressError, match="gguf_engine llama.cpp scores plain text, and this data is messages"):
        run_pipeline(write_config(tmp_path / "b", assets, [evaluate], dataset="chat"))
    (tmp_path / "short").mkdir()
    for split in ("train", "validation", "test"):
        (tmp_path / "short" / f"{split}.txt").write_text((assets / "text" / f"{split}.txt").read_text())
    (tmp_path / "short" / "validation.txt").write_text(held_out_text(2, 1)[:90])  # about 55 tokens
    path = write_config(tmp_path / "c", tmp_path, [evaluate], dataset="short", model_name_or_path=str(assets / "teacher"))
    with pytest.raises(HfCompressError, match=r"the validation text has \d+ tokens, and llama-perplexity needs at least 64 \(2 x block_size\)"):
        run_pipeline(path)
    for folder in ("a", "b", "c"):
        assert not (tmp_path / folder / "out").exists()
