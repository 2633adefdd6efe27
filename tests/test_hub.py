"""Naming, model cards from a run's figures, export, and push against a local stand-in for the Hub."""

import pytest
import yaml
from conftest import make_bert, make_tokenizer
from hub_server import FakeHub
from transformers import AutoModelForSequenceClassification

from hfcompress import HfCompressError
from hfcompress.hub import CompressionInfo, build_model_card, export_variant, push_variant, variant_name

TOKEN = "hf_secret_token_1234567890"


@pytest.fixture
def model_dir(tmp_path):
    tok = make_tokenizer(tmp_path)
    model = make_bert(num_layers=2, tokenizer=tok)
    model.save_pretrained(tmp_path / "student")
    tok.save_pretrained(tmp_path / "student")
    return tmp_path / "student"


def info(**changes):
    base = dict(
        kind="distilled",
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        dataset="rotten_tomatoes",
        method="knowledge distillation (T=2, alpha=0.5)",
        settings={"student_layers": "every_other", "temperature": 2.0},
        teacher="sentence-transformers/all-MiniLM-L6-v2 (fine-tuned)",
        metrics={
            "test_accuracy": 0.8314,
            "test_f1": 0.8543,
            "parameters": 17390594,
            "size_mb": 66.4,
            "latency_ms_b32": 78.4,
        },
        reference={
            "test_accuracy": 0.8371,
            "test_f1": 0.8646,
            "parameters": 22713986,
            "size_mb": 86.7,
            "latency_ms_b32": 155.7,
        },
        command="accelerate launch recipes/distill_bert.py --config recipes/configs/minilm/rotten_tomatoes/distill_full_hidden.yaml",
    )
    return CompressionInfo(**{**base, **changes})


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # The stand-in speaks Git LFS, not Xet: huggingface_hub 1.x+ uploads through Xet whenever hf_xet is
    # installed, unless HF_HUB_DISABLE_XET is set (0.x negotiates, and the stand-in answers "basic").
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    def start(mode="ok"):
        server = FakeHub(mode)
        monkeypatch.setenv("HF_ENDPOINT", server.url)  # what a user sets; huggingface_hub reads it at import
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        return server

    return start


def test_variant_names():
    assert variant_name("sentence-transformers/all-MiniLM-L6-v2", "rotten_tomatoes", "distilled", "3L") == (
        "all-minilm-l6-v2-rotten-tomatoes-distilled-3L"
    )
    assert variant_name("outputs/x/student/", "sst2", "onnx", "int8") == "student-sst2-onnx-int8"
    assert (
        variant_name("m", "/data/my reviews.csv", "pruned", "4L", "ffn768") == "m-my-reviews-pruned-4L-ffn768"
    )


def test_card_metadata_and_figures():
    card = build_model_card(info(), "me/all-minilm-l6-v2-rotten-tomatoes-distilled-3L")
    meta = yaml.safe_load(str(card).split("---")[1])
    assert (
        meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
        and meta["base_model_relation"] == "finetune"
    )
    assert "distillation" in meta["tags"] and meta["datasets"] == ["rotten_tomatoes"]
    results = meta["model-index"][0]["results"][0]
    assert {m["type"]: m["value"] for m in results["metrics"]} == {"accuracy": 0.8314, "f1": 0.8543}
    text = str(card)
    assert "| test_accuracy | 0.8314 | 0.8371 |" in text and "distill_full_hidden.yaml" in text
    assert "Teacher: `sentence-transformers/all-MiniLM-L6-v2 (fine-tuned)`" in text
    quantized = build_model_card(
        info(kind="onnx", metrics={"test_accuracy": 0.83, "size_mb": 22.0}), "me/x-onnx-int8"
    )
    assert yaml.safe_load(str(quantized).split("---")[1])["base_model_relation"] == "quantized"
    assert "ORTModelForSequenceClassification" in str(quantized)


def test_an_lm_card_names_the_engines_that_serve_its_format():
    lm = dict(kind="quantized", task_type="text-generation", task_name="Text Generation", base_model="HuggingFaceTB/x",
              metrics={"test_perplexity": 12.5, "size_mb": 90.0})  # fmt: skip
    gptq = str(build_model_card(info(method="gptq-w4a16", **lm), "me/x-gptq-w4a16"))
    assert "Runs in: vLLM and SGLang (compressed-tensors), as it is; transformers with `pip install " in gptq
    assert "# needs: pip install compressed-tensors\nfrom transformers import AutoModelForCausalLM" in gptq
    nf4 = str(build_model_card(info(method="bnb-nf4", **lm), "me/x-nf4"))
    assert "Runs in: transformers with bitsandbytes." in nf4 and "compressed-tensors" not in nf4


def test_a_gguf_card_says_how_to_run_it_in_llama_cpp_and_ollama_and_where_it_was_measured():
    lm = dict(kind="quantized", task_type="text-generation", task_name="Text Generation", base_model="HuggingFaceTB/x",
              metrics={"test_perplexity": 12.5, "size_mb": 90.0, "engine": "llama.cpp"})  # fmt: skip
    card = str(build_model_card(info(method="gguf-q4_k_m", gguf_file="model-Q4_K_M.gguf", **lm), "me/x-q4"))
    assert '#   llama-cli --hf-repo me/x-q4 --hf-file model-Q4_K_M.gguf -p "Hello"' in card
    assert "#   ollama run hf.co/me/x-q4" in card
    assert 'AutoModelForCausalLM.from_pretrained("me/x-q4", gguf_file="model-Q4_K_M.gguf")' in card
    assert "Measured in llama.cpp: perplexity by `llama-perplexity`" in card
    plain = str(build_model_card(info(method="bnb-nf4", **{**lm, "metrics": {"test_perplexity": 12.5, "size_mb": 9.0}}),
                                 "me/x-nf4"))  # fmt: skip
    assert "llama-cli" not in plain and "Measured in llama.cpp" not in plain


def test_an_lm_card_carries_the_task_table_and_the_test_figures_only():
    lm = dict(kind="distilled", task_type="text-generation", task_name="Text Generation", base_model="HuggingFaceTB/x",
              metrics={"test_perplexity": 12.5, "test_tokens": 2048, "size_mb": 90.0})  # fmt: skip
    teacher = {"hfc_test_cloze": {"acc": 0.6, "acc_stderr": 0.049, "sample_len": 100.0}}
    card = str(build_model_card(info(**lm, tasks={"hfc_test_cloze": {"acc": 0.55, "acc_stderr": 0.05,
                                                                      "sample_len": 100.0}},
                                     reference_tasks=teacher), "me/x-student"))  # fmt: skip
    assert "| hfc_test_cloze | acc | 0.55 ± 0.05 | 0.6 ± 0.049 |" in card and "sample_len" not in card
    results = yaml.safe_load(card.split("---")[1])["model-index"][0]["results"][0]["metrics"]
    assert [m["type"] for m in results] == ["perplexity"]  # token counts are not metrics
    onnx = str(build_model_card(info(**{**lm, "kind": "onnx"}, method="onnx-int8-dynamic", reference_tasks=teacher),
                                "me/x-onnx"))  # fmt: skip
    assert "| hfc_test_cloze | acc | - | 0.6 ± 0.049 |" in onnx and "This model was not scored" in onnx
    assert "ORTModelForCausalLM" in onnx


def test_card_with_missing_figures_is_refused():
    with pytest.raises(HfCompressError, match="model card figures missing: size_mb"):
        build_model_card(info(metrics={"test_accuracy": 0.8}), "me/x")
    with pytest.raises(HfCompressError, match="missing: command"):
        build_model_card(info(command=""), "me/x")


def test_export_writes_exactly_the_pushed_folder(model_dir, tmp_path):
    (model_dir / "training_args.bin").write_bytes(b"pickle")  # never shipped
    out = export_variant(model_dir, tmp_path / "export", build_model_card(info(), "me/x"))
    names = sorted(p.name for p in out.iterdir())
    assert "README.md" in names and "model.safetensors" in names and "config.json" in names
    assert "training_args.bin" not in names and "tokenizer_config.json" in names
    assert AutoModelForSequenceClassification.from_pretrained(out).config.num_hidden_layers == 2
    with pytest.raises(HfCompressError, match="already exists"):
        export_variant(model_dir, out, build_model_card(info(), "me/x"))


def test_not_a_model_is_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(HfCompressError, match="is not a saved model.*pickled weights"):
        export_variant(tmp_path / "junk", tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


def test_push_uploads_the_export(model_dir, hub):
    with hub() as server:
        url = push_variant(
            model_dir, "me/tiny-distilled-2L", build_model_card(info(), "me/tiny-distilled-2L"), private=True
        )
    assert url.endswith("/commit/abc")
    created = server.repos["me/tiny-distilled-2L"]
    assert (
        created.get("private") is True or created.get("visibility") == "private"
    )  # huggingface_hub 0.x / 1.x+
    pushed = {path for (repo, _, path) in server.files}
    assert {"README.md", "model.safetensors", "config.json", "tokenizer_config.json"} <= pushed
    # the weights went through Git LFS (batch endpoint, then a PUT of the bytes), the rest inline
    assert (
        server.upload_modes["model.safetensors"] == "lfs" and server.upload_modes["config.json"] == "regular"
    )
    assert any(r.endswith(".git/info/lfs/objects/batch") for r in server.requests)
    weights = next(v for (_, _, p), v in server.files.items() if p == "model.safetensors")
    assert (
        weights == (model_dir / "model.safetensors").read_bytes() and weights in server.lfs_objects.values()
    )
    assert f"Bearer {TOKEN}" in server.auth
    readme = next(v for (r, _, p), v in server.files.items() if p == "README.md").decode()
    assert TOKEN not in readme and all(TOKEN.encode() not in v for v in server.files.values())


def test_push_to_a_revision(model_dir, hub):
    with hub() as server:
        push_variant(model_dir, "me/tiny", build_model_card(info(), "me/tiny"), revision="int8")
    assert any("/branch/int8" in r for r in server.requests)
    assert {rev for (_, rev, _) in server.files} == {"int8"}


@pytest.mark.parametrize(
    "mode,message",
    [
        ("401", r"the token was refused \(HTTP 401\); the local folder is unchanged"),
        ("drop", "connection to .* lost"),
    ],
)
def test_push_failures_leave_the_folder_intact(model_dir, hub, mode, message):
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    with hub(mode):
        with pytest.raises(HfCompressError, match=message):
            push_variant(model_dir, "me/tiny", build_model_card(info(), "me/tiny"))
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before


def test_push_without_token(model_dir, hub, monkeypatch, tmp_path):
    hub()
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(HfCompressError, match="no Hugging Face token"):
        push_variant(model_dir, "me/tiny", build_model_card(info(), "me/tiny"))


@pytest.mark.parametrize("repo_id", ["no-namespace", "me/bad name", "me/--x", "a/b/c"])
def test_invalid_repo_ids(model_dir, repo_id):
    with pytest.raises(HfCompressError, match="invalid repo id"):
        push_variant(model_dir, repo_id, None)


def test_recipe_exports_and_pushes_with_figures_from_its_report(hub, tmp_path):
    from test_recipe import assets as assets_fixture  # noqa: F401
    from test_recipe import base_args, load_recipe

    root = tmp_path / "assets"
    root.mkdir()
    from transformers import BertConfig, BertModel

    tok = make_tokenizer(root)
    BertModel(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    from conftest import make_text_dataset

    make_text_dataset(80).to_pandas().rename(columns={"text": "review", "label": "fresh"}).to_csv(
        root / "reviews.csv", index=False
    )
    out = tmp_path / "run"
    with hub() as server:
        report = load_recipe().main(
            base_args(root, out, "--share_namespace", "me", "--share_export_dir", str(tmp_path / "export"))
        )
    name = "base-reviews-distilled-1L"
    assert report["hub"]["student"]["repo_id"] == f"me/{name}"
    assert "GET /api/whoami-v2" in server.requests[0]  # the token was checked before any work
    card = (tmp_path / "export" / name / "README.md").read_text()
    accuracy = report["results"][1]["test_accuracy"]
    assert f"| test_accuracy | {accuracy:.4g} |" in card and "recipes/distill_bert.py" in card
    pushed = {p: v for (r, _, p), v in server.files.items() if r == f"me/{name}"}
    assert pushed["README.md"].decode() == card
    assert set(pushed) == {p.name for p in (tmp_path / "export" / name).iterdir()}


def test_recipe_with_a_refused_token_stops_before_writing(hub, tmp_path):
    """The token is checked with whoami before training, not found wrong at push time after a full run."""
    from test_recipe import base_args, load_recipe

    with hub("401") as server:
        with pytest.raises(HfCompressError, match=r"refused the Hugging Face token \(HTTP 401\)"):
            load_recipe().main(base_args(tmp_path, tmp_path / "never", "--share_namespace", "me"))
    assert server.requests == ["GET /api/whoami-v2"]
    assert not (tmp_path / "never").exists()


def test_only_connection_errors_are_called_a_lost_connection(model_dir, hub, monkeypatch):
    """A local failure during the upload (here: a file that can't be read) is not reported as a lost
    connection."""
    import huggingface_hub

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "model.safetensors")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", unreadable)
    with hub():
        with pytest.raises(PermissionError):
            push_variant(model_dir, "me/tiny", build_model_card(info(), "me/tiny"))


def test_recipe_push_without_token_stops_before_writing(hub, tmp_path, monkeypatch):
    from test_recipe import base_args, load_recipe

    hub()
    monkeypatch.delenv("HF_TOKEN")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "none"))
    with pytest.raises(HfCompressError, match="no Hugging Face token"):
        load_recipe().main(base_args(tmp_path, tmp_path / "never", "--share_namespace", "me"))
    with pytest.raises(HfCompressError, match="share_namespace must be a user or organization"):
        load_recipe().main(base_args(tmp_path, tmp_path / "never", "--share_namespace", "me/repo"))
    assert not (tmp_path / "never").exists()
