"""The compress pipeline on tiny random models: stages end to end, skipping and rerunning, resuming a killed
run to the same weights, the student search under a budget, other task types, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_bert, make_text_dataset, make_tokenizer, run_pipeline_killed_at_step
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertModel,
)

from hfcompress import HfCompressError
from hfcompress.pipeline import load_pipeline_config, run_pipeline
from hfcompress.quantization.backends import is_optimum_onnx_available

ROOT = Path(__file__).resolve().parents[1]
FAST_EVAL = {"evaluate": {"latency_runs": 1, "latency_batch_sizes": "1,4", "memory": False, "plots": False}}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny base encoder (no head), the same with a trained-looking head (a 'fine-tuned teacher'), data."""
    root = tmp_path_factory.mktemp("pipeline_assets")
    tok = make_tokenizer(root)
    base = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64))  # fmt: skip
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    teacher = make_bert(num_layers=4, tokenizer=tok)
    teacher.config.id2label, teacher.config.label2id = {0: "0", 1: "1"}, {"0": 0, "1": 1}
    teacher.save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    make_text_dataset(120).to_csv(root / "reviews.csv", index=False)
    rows = make_text_dataset(120).to_list()
    multi = [{"text": r["text"], "label": ["pos"] if r["label"] else ["neg", "other"]} for r in rows]
    (root / "multi.jsonl").write_text("\n".join(json.dumps(r) for r in multi) + "\n")
    token = [{"text": r["text"].split(), "label": ["B" if w in ("great", "bad") else "O" for w in r["text"].split()]}
             for r in rows]  # fmt: skip
    (root / "tokens.jsonl").write_text("\n".join(json.dumps(r) for r in token) + "\n")
    return root


def write_config(
    folder: Path, assets: Path, stages: list, model="teacher", dataset="reviews.csv", **top
) -> Path:
    config = {
        "output_dir": str(folder / "out"),
        "model_name_or_path": str(assets / model),
        "data": {"dataset_name": str(assets / dataset), "max_train_samples": 64, "max_eval_samples": 16},
        "training": {
            "per_device_train_batch_size": 8,
            "report_to": "none",
            "disable_tqdm": True,
            "save_steps": 2,
            "logging_steps": 50,
        },  # fmt: skip
        "stages": stages,
        **top,
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def stage_runs(caplog) -> list[str]:
    return [
        r.getMessage().split()[1].rstrip(":") for r in caplog.records if r.getMessage().endswith(": running")
    ]


def weights(folder) -> dict:
    return AutoModelForSequenceClassification.from_pretrained(folder).state_dict()


@pytest.mark.skipif(
    not is_optimum_onnx_available(), reason="needs optimum-onnx (pip install 'hfcompress[onnx]')"
)
def test_end_to_end_then_skipped_then_rerun_from_the_changed_stage(assets, tmp_path, caplog):
    stages = [
        {"finetune": {"num_train_epochs": 1}},
        {
            "search": {
                "min_speedup": 0.5,  # a wide margin: latency_runs 1 on a loaded CPU is noisy
                "depths": "1,2",
                "ffn_fractions": "1.0",
                "proxy_steps": 2,
                "latency_runs": 1,
            }
        },
        {"distill": {"num_train_epochs": 1}},
        {"quantize": {"methods": "onnx-int8-dynamic"}},
        FAST_EVAL,
        {"share": {"share_export_dir": str(tmp_path / "shipped")}},
    ]
    path = write_config(tmp_path, assets, stages, model="base")
    caplog.set_level("INFO", logger="hfcompress")
    report = run_pipeline(path)
    out = tmp_path / "out"
    assert stage_runs(caplog) == ["finetune", "search", "distill", "quantize", "evaluate", "share"]
    names = [r["model"] for r in report["results"]]
    assert names[0] == "teacher" and "student" in names and "student onnx-int8-dynamic" in names
    assert sum(n.startswith("candidate ") for n in names) == 2  # depths 1 and 2, FFN kept whole
    for stage in ("finetune", "search", "distill", "quantize", "evaluate", "share"):
        record = json.loads((out / stage / "stage.json").read_text())
        assert record["fingerprint"] and record["config"] is not None
    assert not (out / "distill" / "checkpoints").exists()  # finished: only the model is kept
    teacher_val = report["results"][0]["validation_accuracy"]
    chosen = next(r for r in report["results"] if r["model"] == report["chosen"])
    assert chosen["validation_accuracy"] >= 0.99 * teacher_val and chosen["stage"] != "candidate"
    check = report["budget_check"]  # the search's budget (>= 0.5x at batch 32) on the shipped variant
    assert (check["variant"], check["batch_size"], check["speedup"]) == (report["chosen"], 32, chosen["speedup_b32"])
    assert check["met"] == (chosen["speedup_b32"] >= 0.5)
    assert ("meets it" if check["met"] else "fails it") in (out / "report.md").read_text()
    shipped = next((tmp_path / "shipped").iterdir())
    assert "hfcompress" in (shipped / "README.md").read_text()
    assert (out / "report.md").read_text().count("| candidate | candidate L") == 2

    caplog.clear()
    run_pipeline(path)
    assert stage_runs(caplog) == []  # same config, same inputs: everything skipped

    caplog.clear()
    stages[2]["distill"]["learning_rate"] = 1e-3
    stages[-1] = {"share": {"share_export_dir": str(tmp_path / "shipped2")}}
    run_pipeline(write_config(tmp_path, assets, stages, model="base"))
    assert stage_runs(caplog) == ["distill", "quantize", "evaluate", "share"]


@pytest.mark.parametrize("stage", ["distill", "finetune"])
def test_killed_training_stage_resumes_to_the_same_weights(assets, tmp_path, stage):
    stages = (
        [{"distill": {"num_train_epochs": 2, "student_layers": "2"}}, FAST_EVAL]
        if stage == "distill"
        else [{"finetune": {"num_train_epochs": 2}}, FAST_EVAL]
    )
    model = "teacher" if stage == "distill" else "base"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run_pipeline(write_config(tmp_path / "a", assets, stages, model=model))
    killed = write_config(tmp_path / "b", assets, stages, model=model)
    result = run_pipeline_killed_at_step(killed, 5)
    assert result.returncode == -9, result.stderr[-2000:]
    out = tmp_path / "b" / "out"
    assert json.loads((out / "pipeline.json").read_text())["status"] == "running"
    assert (out / stage / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()
    report = run_pipeline(killed)
    assert report["stages"][0]["resumed_from"].endswith("checkpoint-4")
    a, b = weights(tmp_path / "a" / "out" / stage / "model"), weights(out / stage / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_killed_run_with_a_changed_finished_stage_is_refused(assets, tmp_path):
    stages = [{"distill": {"num_train_epochs": 1, "student_layers": "2"}}, FAST_EVAL]
    path = write_config(tmp_path, assets, stages)
    run_pipeline(path)
    out = tmp_path / "out"
    record = json.loads((out / "pipeline.json").read_text())
    (out / "pipeline.json").write_text(json.dumps({**record, "status": "running", "current": "evaluate"}))
    before = (out / "distill" / "stage.json").read_text()
    stages[0]["distill"]["learning_rate"] = 1e-3
    with pytest.raises(
        HfCompressError, match="interrupted in stage 'evaluate'.*'distill' finished there with another"
    ):
        run_pipeline(write_config(tmp_path, assets, stages))
    assert (out / "distill" / "stage.json").read_text() == before


def test_search_chooses_the_fastest_candidate_within_noise_of_the_best(assets, tmp_path):
    stages = [
        {
            "search": {
                "max_size_mb": 0.075,
                "depths": "1,2,3",
                "ffn_fractions": "1.0,0.5",
                "proxy_steps": 3,
                "latency_runs": 1,
                "learning_rate": 5e-3,
                "layer_presets": "0,3",
            }
        },  # fmt: skip
        {"distill": {"max_steps": 2}},
        FAST_EVAL,
    ]
    report = run_pipeline(write_config(tmp_path, assets, stages))
    rows = report["search"]["candidates"]
    assert len(rows) == 7
    preset = next(r for r in rows if r["candidate"] == "layers0-3-ffn64-h4")
    assert preset["teacher_layers"] == [0, 3] and preset["layers"] == 2
    within = [r for r in rows if r["within_budget"]]
    assert within and len(within) < len(rows)
    assert all(r["size_mb"] <= 0.075 for r in within)
    assert all("validation_accuracy" not in r for r in rows if not r["within_budget"])  # never trained
    best = max(within, key=lambda r: (r["validation_accuracy"], -r["latency_ms"]))
    assert best["share_below_best"] == 0.0 and best["within_noise_of_best"]
    # 16 validation examples: a candidate below the best in >= 95% of the draws is out, any other is tied
    tied = [r for r in within if r["share_below_best"] < 0.95]
    assert [r["within_noise_of_best"] for r in within] == [r in tied for r in within]
    chosen = min(tied, key=lambda r: (r["latency_ms"], -r["validation_accuracy"]))
    assert report["search"]["chosen"] == chosen["candidate"]
    assert f"within noise of the best ({best['candidate']}" in report["search"]["rule"]
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "distill" / "model")
    assert student.config.num_hidden_layers == chosen["layers"]
    assert student.config.intermediate_size == chosen["intermediate_size"]


@pytest.mark.parametrize("pruning", ["structured", "unstructured"])
def test_prune_stage_after_distill(assets, tmp_path, pruning):
    settings = (
        {"prune_ffn_fraction": 0.5}
        if pruning == "structured"
        else {"target_sparsity": 0.5, "end_step": 2, "frequency": 1}
    )
    stages = [
        {"distill": {"max_steps": 2, "student_layers": "0,2"}},
        {"prune": {"pruning": pruning, "num_train_epochs": 1, **settings}},
        FAST_EVAL,
    ]
    report = run_pipeline(write_config(tmp_path, assets, stages))
    assert [r["model"] for r in report["results"]] == ["teacher", "student", "pruned"]
    record = json.loads((tmp_path / "out" / "prune" / "stage.json").read_text())
    assert record["figures"]["teacher_layers"] == [0, 2]  # the student's layers still map to the teacher's
    pruned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "prune" / "model")
    if pruning == "structured":
        assert pruned.config.num_hidden_layers == 2 and pruned.config.intermediate_size == 32
    else:
        query = pruned.bert.encoder.layer[0].attention.self.query.weight
        assert float((query == 0).float().mean()) == pytest.approx(0.5, abs=0.05)


def test_budget_no_candidate_meets(assets, tmp_path):
    stages = [
        {"search": {"max_latency_ms": 1e-6, "depths": "1,2", "latency_runs": 1}},
        {"distill": {}},
        FAST_EVAL,
    ]
    with pytest.raises(
        HfCompressError, match=r"no candidate meets the budget.*the fastest, L\d-ffn\d+-h4, takes"
    ):
        run_pipeline(write_config(tmp_path, assets, stages))
    assert not (tmp_path / "out" / "search" / "stage.json").exists()


@pytest.mark.parametrize(
    "task,dataset,distill",
    [
        ("multi_label_classification", "multi.jsonl", {"alpha": 0.0, "logits_mse_weight": 1.0}),
        ("token_classification", "tokens.jsonl", {"alpha": 0.5}),
    ],
)
def test_other_task_types(assets, tmp_path, task, dataset, distill):
    stages = [
        {"finetune": {"num_train_epochs": 1}},
        {"distill": {"num_train_epochs": 1, "student_layers": "2", "cache_teacher_logits": False, **distill}},
        FAST_EVAL,
    ]
    path = write_config(tmp_path, assets, stages, model="base", dataset=dataset, task_type=task)
    report = run_pipeline(path)
    assert [r["model"] for r in report["results"]] == ["teacher", "student"]
    # the reported test accuracy is the saved student's, computed here by hand from its predictions
    from hfcompress.data import DistillationDataCollator
    from hfcompress.evaluation import predict
    from hfcompress.pipeline.run import prepare

    _, _, ctx = prepare(load_pipeline_config(path))  # the run's tokenized splits (reads records only)
    model_class = AutoModelForTokenClassification if task == "token_classification" else AutoModelForSequenceClassification
    student = model_class.from_pretrained(tmp_path / "out" / "distill" / "model")
    logits, labels = predict(student, ctx.data.splits["test"], DistillationDataCollator(ctx.tokenizer))
    if task == "multi_label_classification":  # exact match of every label at sigmoid > 0.5
        expected = float(((logits > 0) == labels.astype(bool)).all(axis=1).mean())
    else:  # first sub-word of each word
        keep = labels != -100
        expected = float((logits.argmax(-1)[keep] == labels[keep]).mean())
    assert report["results"][1]["test_accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "stages,message",
    [
        ([{"quantize": {}}, {"distill": {}}], "stage 'distill' can't come after 'quantize'"),
        ([{"share": {}}], "the share stage needs share_namespace or share_export_dir"),
        ([{"share": {"share_namespace": "a/b"}}], "share_namespace must be a user or organization"),
        ([{"search": {}}], "the search stage chooses the student of a distill stage"),
        (
            [{"distill": {"temprature": 2}}],
            "unknown key 'temprature' in stage 'distill'.*did you mean 'temperature'",
        ),
        ([{"distill": {"output_dir": "x"}}], "'output_dir' in stage 'distill': set output_dir once"),
        ([{"compile": {}}], "each stage must be one of finetune, search"),
        ([{"distill": {}}, {"distill": {}}], "stage 'distill' is listed twice"),
        ([{"search": {"min_speedup": 0}}, {"distill": {}}], "min_speedup must be > 0"),
        ([{"quantize": {"methods": "gguf"}}], "each of methods must be one of"),
        ([{"quantize": {"sources": "student"}}], "each of sources must be one of latest, teacher"),
        ([{"evaluate": {"gguf_engine": "ollama"}}], "gguf_engine must be one of auto, llama.cpp, transformers"),
    ],
)
def test_bad_stage_lists(assets, tmp_path, stages, message):
    with pytest.raises(HfCompressError, match=message):
        run_pipeline(write_config(tmp_path, assets, stages))
    assert not (tmp_path / "out").exists()


def test_bad_folders_and_models(assets, tmp_path):
    stages = [{"distill": {"max_steps": 1}}, FAST_EVAL]
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    with pytest.raises(HfCompressError, match="holds no pipeline.json: it was not written by a pipeline"):
        run_pipeline(write_config(tmp_path, assets, stages))
    (out / "report.json").unlink()
    (out / "pipeline.json").write_text(json.dumps({"identity": {"model_name_or_path": "other/model"}}))
    with pytest.raises(HfCompressError, match="holds another pipeline \\(other/model"):
        run_pipeline(write_config(tmp_path, assets, stages))
    assert json.loads((out / "pipeline.json").read_text())["identity"] == {
        "model_name_or_path": "other/model"
    }
    (tmp_path / "x").mkdir()
    with pytest.raises(HfCompressError, match="has no head for these labels: add a 'finetune' stage"):
        run_pipeline(write_config(tmp_path / "x", assets, stages, model="base"))


def test_shipped_yamls_parse_and_name_their_stages():
    for path in sorted((ROOT / "recipes" / "configs").rglob("compress_*.yaml")):
        config = load_pipeline_config(path)
        assert config.names[0] in ("finetune", "search", "distill", "quantize") and config.names[-1] in (
            "evaluate",
            "share",
        )


def test_cli_compress_reports_bad_input(tmp_path, capsys):
    from hfcompress.cli import main

    assert main(["compress", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_recipe_and_cli_run_the_same_pipeline(assets, tmp_path, caplog):
    from conftest import load_recipe

    from hfcompress.cli import main

    path = write_config(tmp_path, assets, [{"distill": {"max_steps": 1, "student_layers": "2"}}])
    report = load_recipe("compress").main(["--config", str(path), "--seed", "7"])
    assert report["seed"] == 7 and report["stages"][-1]["stage"] == "evaluate"  # evaluate added at the end
    caplog.clear()
    caplog.set_level("INFO", logger="hfcompress")
    assert main(["compress", "--config", str(path), "--seed", "7"]) == 0
    assert stage_runs(caplog) == []  # the same run: every stage skipped


def test_the_guides_example_yaml_parses(tmp_path):
    """The YAML shown in docs/pipeline.md is a config that works, not a sketch that drifted."""
    import re

    block = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "pipeline.md").read_text(), re.S)[0]
    (tmp_path / "example.yaml").write_text(block)
    assert load_pipeline_config(tmp_path / "example.yaml").names == [
        "finetune", "search", "distill", "prune", "quantize", "evaluate", "share"
    ]  # fmt: skip


def test_reruns_after_an_upstream_change_reuse_nothing_stale(assets, tmp_path):
    """A changed teacher gets its own logit cache (no 'stale teacher cache'), and the share stage replaces the
    export its own pipeline wrote earlier."""
    stages = [
        {"finetune": {"num_train_epochs": 1}},
        {"distill": {"student_layers": "2", "max_steps": 2, "cache_teacher_logits": True}},
        {"evaluate": {**FAST_EVAL["evaluate"], "min_kept": 0.01}},  # any student is shipped
        {"share": {"share_export_dir": str(tmp_path / "shipped")}},
    ]
    report = run_pipeline(write_config(tmp_path, assets, stages, model="base"))
    caches = sorted((tmp_path / "out" / "teacher_cache").glob("teacher_logits-*.safetensors"))
    assert len(caches) == 1
    (export,) = (tmp_path / "shipped").iterdir()
    assert report["chosen"] is not None
    stages[0] = {"finetune": {"num_train_epochs": 1, "learning_rate": 1e-3}}  # another teacher
    run_pipeline(write_config(tmp_path, assets, stages, model="base"))
    again = sorted((tmp_path / "out" / "teacher_cache").glob("teacher_logits-*.safetensors"))
    assert len(again) == 2 and caches[0] in again  # one file per teacher; the first one untouched
    assert [p.name for p in (tmp_path / "shipped").iterdir()] == [export.name]
    card = (export / "README.md").read_text()
    assert "learning_rate" in card and "0.001" in card  # the new run's card replaced the old export
    # an export folder this pipeline did not write is refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("mine")
    from hfcompress.hub import export_variant

    with pytest.raises(HfCompressError, match="already exists"):
        export_variant(export, other, None, owner=str((tmp_path / "out").resolve()))
    assert (other / "x.txt").read_text() == "mine"


def test_overwrite_output_deletes_only_a_pipeline_folder(assets, tmp_path):
    stages = [{"distill": {"max_steps": 1, "student_layers": "2"}}, FAST_EVAL]
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(HfCompressError, match="--overwrite_output deletes only a folder a pipeline wrote"):
        run_pipeline(write_config(tmp_path, assets, stages, overwrite_output=True))
    assert (out / "thesis.tex").read_text() == "years of work"
    (out / "thesis.tex").unlink()
    run_pipeline(write_config(tmp_path, assets, stages))
    (out / "stray.txt").write_text("x")
    run_pipeline(write_config(tmp_path, assets, stages, overwrite_output=True))  # a pipeline folder: emptied
    assert not (out / "stray.txt").exists() and (out / "pipeline.json").exists()


def test_a_live_run_holds_the_folder_and_a_dead_one_is_taken_over(assets, tmp_path):
    import socket

    stages = [{"distill": {"max_steps": 1, "student_layers": "2"}}, FAST_EVAL]
    path = write_config(tmp_path, assets, stages)
    run_pipeline(path)
    out = tmp_path / "out"
    assert not (out / "pipeline.lock").exists()  # released at the end
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "pipeline.lock").write_text(json.dumps({"pid": live.pid, "host": socket.gethostname()}))
        before = (out / "pipeline.json").read_text()
        with pytest.raises(HfCompressError, match=f"another run \\(pid {live.pid} on .*\\) is using"):
            run_pipeline(write_config(tmp_path, assets, stages, overwrite_output=True))
        assert (out / "pipeline.json").read_text() == before
    finally:
        live.kill()
        live.wait()
    run_pipeline(path)  # the same pid is dead now: its lock is taken over
    assert not (out / "pipeline.lock").exists()


def test_the_selection_metric_chooses_the_student_and_the_shipped_variant(assets, tmp_path):
    stages = [
        {"search": {"max_parameters": 10**9, "depths": "1,2", "ffn_fractions": "1.0", "proxy_steps": 1,  # no timing
                    "latency_runs": 1, "selection": "best"}},
        {"distill": {"max_steps": 2}},
        {"evaluate": {**FAST_EVAL["evaluate"], "min_kept": 0.01}},
        {"share": {"share_export_dir": str(tmp_path / "shipped")}},
    ]
    config = {"data": {"dataset_name": str(assets / "reviews.csv"), "max_train_samples": 64, "max_eval_samples": 16,
                       "metrics": "f1"}}  # fmt: skip
    path = write_config(tmp_path, assets, stages)
    raw = yaml.safe_load(path.read_text())
    raw["data"] = config["data"]
    path.write_text(yaml.safe_dump(raw))
    # f1 only, but the default selection metric is accuracy: refused before anything is written
    with pytest.raises(HfCompressError, match="selection_metric 'accuracy' is not among the metrics .* \\(f1\\)"):
        run_pipeline(path)
    assert not (tmp_path / "out").exists()
    report = run_pipeline(path, ["--selection_metric", "f1"])
    search = report["search"]
    assert search["metric"] == "f1" and "best validation f1" in search["rule"]
    scored = [r for r in search["candidates"] if r["within_budget"]]
    best = max(r["validation_f1"] for r in scored)
    assert search["chosen"] in [r["candidate"] for r in scored if r["validation_f1"] == best]
    assert "validation f1 is >=" in report["rule"] and report["selection_metric"] == "f1"
    rows = {r["model"]: r for r in report["results"]}
    teacher_f1, chosen = rows["teacher"]["validation_f1"], rows[report["chosen"]]
    expected = chosen["validation_f1"] / teacher_f1 if teacher_f1 else None  # this random head may score 0
    assert chosen["kept_validation"] == (pytest.approx(expected) if expected is not None else None)
    (card,) = (tmp_path / "shipped").glob("*/README.md")
    assert "f1" in card.read_text()


def test_fingerprints_follow_what_a_stage_computes(assets, tmp_path, caplog):
    """Resolved, type-converted configs and the model folder's content decide what reruns; logging does not."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(assets / "teacher", model)
    stages = [{"distill": {"max_steps": 2, "student_layers": "2", "learning_rate": "1e-3"}}, FAST_EVAL]

    def run(stages, **training):
        path = write_config(tmp_path, assets, stages, model="teacher")
        raw = yaml.safe_load(path.read_text())
        raw["model_name_or_path"] = str(model)
        raw["training"] |= training
        path.write_text(yaml.safe_dump(raw))
        caplog.clear()
        report = run_pipeline(path)
        return report, stage_runs(caplog)

    caplog.set_level("INFO", logger="hfcompress")
    run(stages)
    out = tmp_path / "out"
    record = json.loads((out / "distill" / "stage.json").read_text())
    assert record["config"]["DistillationConfig"]["learning_rate"] == 0.001  # '1e-3' converted, as recipes do
    assert record["versions"]["transformers"] and record["versions"]["torch"]
    same = [{"distill": {"max_steps": 2, "student_layers": "2", "learning_rate": 0.001}}, FAST_EVAL]
    assert run(same, logging_steps=1, report_to="none")[1] == []  # the same values, other logging: skipped
    weights = model / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(weights)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, weights, metadata={"format": "pt"})  # the model folder overwritten in place
    assert run(same)[1] == ["distill", "evaluate"]


STAGE_MODULE = '''"""``count``: counts the parameters of the model the last stage trained."""

from dataclasses import dataclass, field

from hfcompress.pipeline.spec import StageSpec


@dataclass
class CountConfig:
    what: str = field(default="parameters", metadata={"help": "What to count."})


def run(ctx, stage, folder):
    student = ctx.load_model(ctx.latest.folder)
    return {"counted": stage.get(CountConfig).what, "value": student.num_parameters()}, None


SPEC = StageSpec(name="count", configs=(CountConfig,), run=run, output=lambda record: record["figures"])
'''


def test_a_new_stage_is_one_module_and_one_registry_entry(assets, tmp_path, monkeypatch):
    """A stage written as one module (its config dataclass and its StageSpec, as docs/pipeline.md says) and
    listed in the registry is parsed strictly, fingerprinted, run in order, recorded, and reads earlier results
    by type (here: the student the distill stage trained)."""
    import importlib

    from hfcompress.pipeline.registry import REGISTRY

    (tmp_path / "count_stage.py").write_text(STAGE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    count = importlib.import_module("count_stage")
    entries = list(REGISTRY.items())
    at = [name for name, _ in entries].index("distill") + 1
    REGISTRY.clear()  # the registry as it would read with one more line, after distill
    REGISTRY.update(entries[:at] + [("count", count.SPEC)] + entries[at:])
    try:
        with pytest.raises(HfCompressError, match="unknown key 'wat' in stage 'count'.*did you mean 'what'"):
            load_pipeline_config(write_config(tmp_path, assets, [{"distill": {}}, {"count": {"wat": 1}}]))
        with pytest.raises(HfCompressError, match="stage 'count' can't come after 'quantize'"):
            load_pipeline_config(write_config(tmp_path, assets, [{"quantize": {}}, {"count": {}}]))
        path = write_config(tmp_path, assets, [{"distill": {"max_steps": 1, "student_layers": "2"}},
                                               {"count": {"what": "weights"}}, FAST_EVAL])  # fmt: skip
        report = run_pipeline(path)
    finally:
        REGISTRY.clear()
        REGISTRY.update(entries)
    assert [s["stage"] for s in report["stages"]] == ["distill", "count", "evaluate"]
    record = json.loads((tmp_path / "out" / "count" / "stage.json").read_text())
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "distill" / "model")
    assert record["figures"] == {"counted": "weights", "value": student.num_parameters()}
    assert record["config"] == {"CountConfig": {"what": "weights"}}
