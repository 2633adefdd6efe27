"""GGUF made by llama.cpp's own tools (its converter and ``llama-quantize``) for every decoder family we claim,
and run in llama.cpp (``llama-perplexity``): tiny random models of each family's real shape, with real
tokenizers, give in llama.cpp the perplexity transformers gives over the same chunks. Skipped, with the install
command, where the tools aren't built (``make setup-llama-tools``)."""

import json

import pytest
from conftest import (
    FAMILY_CONFIGS,
    held_out_text,
    llama_cpp_models_dir,
    make_decoder,
    real_chat_tokenizer,
    sentencepiece_model_from_gguf,
)

from hfcompress import HfCompressError
from hfcompress.evaluation.lm import chunked_perplexity
from hfcompress.quantization import quantize
from hfcompress.quantization.llama_cpp_tools import convert_to_gguf, llama_perplexity

CONTEXT = 64
SENTENCEPIECE = ("phi-3", "llama-spm")  # tokenizers whose models ship a SentencePiece tokenizer.model
# each family with the real tokenizer its released models use (llama.cpp's vocabularies)
# (Gemma's own SentencePiece vocabulary is not among llama.cpp's test vocabularies, only Gemma 4's BPE one: the
# Gemma models run on Llama 2's SentencePiece vocabulary, a stand-in; their architecture is what is tested)
TOKENIZERS = {"llama": "llama-bpe", "llama-3.1": "llama-bpe", "mistral": "llama-spm", "qwen2": "qwen2",
              "qwen2.5": "qwen2", "qwen3": "qwen2", "phi3": "phi-3", "phi-3.5": "phi-3", "granite": "starcoder",
              "gemma2": "llama-spm", "gemma-2": "llama-spm", "gemma3_text": "llama-spm", "gemma-3": "llama-spm"}  # fmt: skip
# the chat template a released model of the family ships (llama.cpp's copies), where one is among them
TEMPLATES = {"llama-3.1": "meta-llama-Llama-3.1-8B-Instruct", "qwen2.5": "Qwen-Qwen2.5-7B-Instruct",
             "qwen3": "Qwen-Qwen3-0.6B", "phi-3.5": "microsoft-Phi-3.5-mini-instruct", "gemma-2": "google-gemma-2-2b-it",
             "granite": "ibm-granite-granite-3.3-2B-Instruct"}  # fmt: skip


def gguf_fields(path, *keys):
    """The values of metadata ``keys`` in a GGUF file (None where absent): strings decoded, one-value arrays
    unwrapped."""
    import gguf

    reader, values = gguf.GGUFReader(path), []
    for key in keys:
        field = reader.fields.get(key)
        if field is None:
            values.append(None)
            continue
        value = field.parts[field.data[0]]
        values.append(bytes(value).decode() if field.types[0] == gguf.GGUFValueType.STRING else value.tolist()[0])
    return values


def tiny_model_dir(family: str, folder, tokenizer_name: str):
    """A tiny random ``family`` model with a real tokenizer (and its released models' chat template), saved as a
    user's fine-tuned model is."""
    tokenizer = real_chat_tokenizer(tokenizer_name, TEMPLATES.get(family))
    model = make_decoder(family, vocab_size=len(tokenizer))
    for name in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{name}_token_id")
        setattr(model.config, f"{name}_token_id", token_id if token_id is not None else tokenizer.eos_token_id)
    model.generation_config.bos_token_id = model.config.bos_token_id
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if tokenizer_name in SENTENCEPIECE:  # the released models ship tokenizer.model too; llama.cpp reads it
        sentencepiece_model_from_gguf(llama_cpp_models_dir() / f"ggml-vocab-{tokenizer_name}.gguf", folder / "tokenizer.model")
    return model, tokenizer


@pytest.mark.parametrize("family", sorted(TOKENIZERS))
def test_a_family_converted_by_llama_cpp_runs_there_with_the_perplexity_transformers_gives(
    family, llama_cpp_tools, tmp_path
):
    model, tokenizer = tiny_model_dir(family, tmp_path / "model", TOKENIZERS[family])
    text = held_out_text(paragraphs=20)
    (tmp_path / "text.txt").write_text(text)
    gguf = convert_to_gguf(tmp_path / "model", tmp_path / "model-F32.gguf", "f32")
    expected = chunked_perplexity(model, tokenizer, text, CONTEXT)
    measured = llama_perplexity(gguf, tmp_path / "text.txt", CONTEXT, threads=2)
    # fp32 both sides: the same to about 1e-5 (measured), except Gemma's GELU, which ggml's CPU backend computes
    # from a table of fp16 inputs (GGML_GELU_FP16 in ggml/src/ggml-cpu/vec.h): 8e-4 to 3e-3 measured
    tolerance = 5e-3 if family.startswith("gemma") else 1e-4
    assert measured["perplexity"] == pytest.approx(expected["perplexity"], rel=tolerance), (family, expected, measured)
    # the tokenizer as llama.cpp's own file of that tokenizer has it (its pre-tokenizer decides the token ids),
    # the special ids as the model has them, and the chat template as the tokenizer has it
    keys = ("tokenizer.ggml.model", "tokenizer.ggml.pre")
    vocab = llama_cpp_models_dir() / f"ggml-vocab-{TOKENIZERS[family]}.gguf"
    assert gguf_fields(gguf, *keys) == gguf_fields(vocab, *keys)
    bos, eos, template = gguf_fields(gguf, "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                     "tokenizer.chat_template")  # fmt: skip
    assert (bos, eos) == (model.config.bos_token_id, model.config.eos_token_id)
    assert template == tokenizer.chat_template and (template is not None) == (family in TEMPLATES)
    # and through quantize(), as users make it: Q8_0 by llama-quantize, close to the same chunks' figure
    out = quantize(tmp_path / "model", tmp_path / "q8", method="gguf-q8_0")
    assert json.loads((out / "hfcompress_quantization.json").read_text())["writer"] == "llama.cpp"
    q8 = llama_perplexity(out / "model-Q8_0.gguf", tmp_path / "text.txt", CONTEXT, threads=2)
    assert q8["perplexity"] == pytest.approx(expected["perplexity"], rel=0.01), (family, expected, q8)


def test_quantize_writes_k_quants_with_llama_cpp_and_records_the_fallbacks(llama_cpp_tools, tmp_path):
    """Rows that don't divide by 256 (SmolLM2's 576 columns; 32 here) can't take a K-quant: llama-quantize falls
    back per tensor, the record lists what fell back to what, the file holds those types, and it reads back in
    transformers (which dequantizes it)."""
    import gguf

    model, tokenizer = tiny_model_dir("llama-3.1", tmp_path / "model", "llama-bpe")
    out = quantize(tmp_path / "model", tmp_path / "q4km", method="gguf-q4_k_m")
    record = json.loads((out / "hfcompress_quantization.json").read_text())
    assert record["writer"] == "llama.cpp" and record["imatrix"] is None
    reader = gguf.GGUFReader(out / "model-Q4_K_M.gguf")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    fell_back = {f["tensor"]: f["used"].upper() for f in record["fallbacks"]}
    assert fell_back  # 64 columns: no 256-element K-quant block fits
    for tensor, used in fell_back.items():
        assert types[tensor] == used, (tensor, types[tensor], used)
    from hfcompress.quantization import load_quantized

    assert load_quantized(out).config.num_hidden_layers == model.config.num_hidden_layers


def test_the_embedding_and_output_types_are_a_setting(llama_cpp_tools, tmp_path):
    """llama-quantize keeps the token embedding and the output matrix at 6-8 bits, most of a small model's file;
    gguf_embedding_type sets them."""
    import gguf

    tiny_model_dir("llama-3.1", tmp_path / "model", "llama-bpe")  # untied: token_embd and output
    out = quantize(tmp_path / "model", tmp_path / "q4", method="gguf-q4_0", gguf_embedding_type="q4_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out / "model-Q4_0.gguf").tensors}
    assert types["token_embd.weight"] == types["output.weight"] == "Q4_0"
    default = quantize(tmp_path / "model", tmp_path / "q4d", method="gguf-q4_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(default / "model-Q4_0.gguf").tensors}
    assert types["output.weight"] != "Q4_0"


def test_the_importance_matrix_comes_from_the_calibration_text(llama_cpp_tools, tmp_path):
    from datasets import Dataset

    tiny_model_dir("qwen2.5", tmp_path / "model", "qwen2")
    rows = Dataset.from_dict({"text": [held_out_text(paragraphs=30, seed=s) for s in range(4)]})
    out = quantize(tmp_path / "model", tmp_path / "iq4", method="gguf-iq4_nl", gguf_imatrix=True,
                   calibration_dataset=rows, calibration_samples=4)  # fmt: skip
    record = json.loads((out / "hfcompress_quantization.json").read_text())
    assert record["imatrix"] == {"rows": 4, "characters": len("\n\n".join(rows["text"]))}
    with pytest.raises(HfCompressError, match="gguf_imatrix needs calibration text"):
        quantize(tmp_path / "model", tmp_path / "iq4b", method="gguf-iq4_nl", gguf_imatrix=True)
    assert not (tmp_path / "iq4b").exists()


def test_without_llama_cpp_the_k_quants_name_the_install_command(tmp_path):
    model, tokenizer = tiny_model_dir("llama-3.1", tmp_path / "model", "llama-bpe")
    with pytest.raises(HfCompressError, match="written by llama.cpp's quantizer, which is not installed: run `make"):
        quantize(tmp_path / "model", tmp_path / "out", method="gguf-q4_k_m")
    with pytest.raises(HfCompressError, match="llama.cpp's tools are not installed"):
        quantize(tmp_path / "model", tmp_path / "out", method="gguf-q8_0", gguf_writer="llama.cpp")
    with pytest.raises(HfCompressError, match="gguf_embedding_type is llama-quantize's setting"):
        quantize(tmp_path / "model", tmp_path / "out", method="gguf-q8_0", gguf_embedding_type="Q4_0")
    assert not (tmp_path / "out").exists()


def test_every_family_we_claim_is_converted_here():
    """A family added to FAMILY_CONFIGS without a tokenizer here would silently go untested in llama.cpp."""
    assert sorted(set(FAMILY_CONFIGS) - set(TOKENIZERS)) == []


@pytest.mark.slow
def test_smollm2_converted_by_llama_cpp_gives_transformers_perplexity_and_q8_0_stays_close(
    llama_cpp_tools, tmp_path, monkeypatch
):
    """The real model (the offline asset, `make assets-llm`): llama.cpp's converter and its tokenizer inside the
    file give, on Pride and Prejudice, the perplexity transformers gives over the same chunks; Q8_0 by
    llama-quantize stays within 1% of it."""
    from conftest import USER_ASSET_CACHE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfcompress.quantization.llama_cpp_tools import kl_divergence

    monkeypatch.setenv("HFCOMPRESS_CACHE", USER_ASSET_CACHE)
    from hfcompress.assets import resolve_model
    from hfcompress.data.causal_lm import load_lm_texts, split_text

    folder = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    if folder == "HuggingFaceTB/SmolLM2-135M-Instruct":
        pytest.skip("the SmolLM2 asset is not fetched: run `make assets-llm`")
    text = split_text(load_lm_texts("austen_novels"), "test")[:60000]
    (tmp_path / "test.txt").write_text(text)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    expected = chunked_perplexity(model, AutoTokenizer.from_pretrained(folder), text, 256, chunks=8)
    f32 = convert_to_gguf(folder, tmp_path / "model-F32.gguf", "f32")
    measured = llama_perplexity(f32, tmp_path / "test.txt", 256, threads=2, chunks=8,
                                save_logits=tmp_path / "f32.logits")  # fmt: skip
    assert measured["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-4)
    out = quantize(folder, tmp_path / "q8", method="gguf-q8_0")
    kl = kl_divergence(out / "model-Q8_0.gguf", tmp_path / "f32.logits", threads=2)
    assert kl["perplexity"] == pytest.approx(measured["perplexity"], rel=0.01) and kl["kl_divergence"] < 0.01


def test_the_pipeline_quantizes_the_teacher_too_and_measures_gguf_in_llama_cpp(llama_cpp_tools, tmp_path):
    """quantize with ``sources: latest,teacher`` makes a GGUF of the pruned model and of the teacher; evaluate
    measures both in llama.cpp: llama-perplexity's figure over chunks of block_size, kept against the teacher's
    perplexity over those same chunks, llama-bench's speeds; the shipped GGUF's card says how to run it."""
    import yaml
    from transformers import AutoModelForCausalLM

    from hfcompress.pipeline import run_pipeline

    teacher, tokenizer = tiny_model_dir("llama", tmp_path / "teacher", "llama-bpe")
    (tmp_path / "text").mkdir()
    for split, count, seed in (("train", 30, 0), ("validation", 20, 1), ("test", 20, 2)):
        (tmp_path / "text" / f"{split}.txt").write_text(held_out_text(count, seed))
    stages = [
        {"prune": {"prune_ffn_fraction": 0.5, "max_steps": 1}},
        {"quantize": {"methods": "gguf-q8_0", "sources": "latest,teacher"}},
        # the smallest variant whatever its perplexity, so the card of a GGUF is checked
        {"evaluate": {"objective": "size", "min_kept": 0.01, "latency_rounds": 1, "generate_tokens": 4,
                      "prompt_batch_size": 2, "memory": False, "plots": False, "gguf_engine": "llama.cpp"}},
        {"share": {"share_export_dir": str(tmp_path / "shipped")}},
    ]  # fmt: skip
    config = {"output_dir": str(tmp_path / "out"), "model_name_or_path": str(tmp_path / "teacher"),
              "task_type": "causal_lm",
              "data": {"dataset_name": str(tmp_path / "text"), "block_size": 32, "eval_stride": 32,
                       "max_eval_tokens": 256},
              "training": {"per_device_train_batch_size": 4, "report_to": "none", "disable_tqdm": True},
              "stages": stages}  # fmt: skip
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config))
    report = run_pipeline(tmp_path / "pipeline.yaml")
    rows = {r["model"]: r for r in report["results"]}
    assert list(rows) == ["teacher", "pruned", "pruned gguf-q8_0", "teacher gguf-q8_0"]
    assert [rows[m]["engine"] for m in rows] == ["transformers", "transformers", "llama.cpp", "llama.cpp"]
    out = tmp_path / "out" / "quantize"
    assert (out / "gguf-q8_0" / "model-Q8_0.gguf").is_file() and (out / "teacher" / "gguf-q8_0" / "model-Q8_0.gguf").is_file()

    test_text = (tmp_path / "text" / "test.txt").read_text()
    chunks = 256 // 32
    # the teacher over llama-perplexity's chunks, in transformers: the reference the GGUF rows are kept against
    reference = chunked_perplexity(teacher.eval(), tokenizer, test_text, 32, chunks)
    assert rows["teacher"]["test_perplexity_llama_cpp_windows"] == pytest.approx(reference["perplexity"], rel=1e-5)
    (tmp_path / "test.txt").write_text(test_text)
    for name, folder in (("teacher gguf-q8_0", out / "teacher" / "gguf-q8_0"), ("pruned gguf-q8_0", out / "gguf-q8_0")):
        row = rows[name]
        again = llama_perplexity(folder / "model-Q8_0.gguf", tmp_path / "test.txt", 32, threads=row["torch_threads"],
                                 chunks=chunks)  # fmt: skip
        assert row["test_perplexity"] == pytest.approx(again["perplexity"], rel=1e-6)
        assert row["test_perplexity_reference"] == rows["teacher"]["test_perplexity_llama_cpp_windows"]
        assert row["kept_test"] == pytest.approx(row["test_perplexity_reference"] / row["test_perplexity"])
        assert row["test_tokens"] == reference["tokens"] == chunks * (32 - 1 - 16)
        assert len(row["generate_tokens_per_s_rounds"]) == 3  # llama-bench repetitions: at least 3
        assert row["speedup_generate"] == pytest.approx(row["generate_tokens_per_s_b1"] / rows["teacher"]["generate_tokens_per_s_b1"])
    # Q8_0 of the teacher: within 1% of the teacher over the same chunks (the tiny model's logits are small)
    assert rows["teacher gguf-q8_0"]["kept_test"] == pytest.approx(1.0, abs=0.01)
    # the GGUF holds every weight of the model (the tied embedding once)
    assert rows["teacher gguf-q8_0"]["parameters"] == sum(p.numel() for p in teacher.parameters())
    assert "Measured in llama.cpp: pruned gguf-q8_0, teacher gguf-q8_0." in (tmp_path / "out" / "report.md").read_text()

    assert report["chosen"] == "pruned gguf-q8_0"  # the smallest on disk
    shipped = next((tmp_path / "shipped").iterdir())
    card = (shipped / "README.md").read_text()
    assert f"llama-cli --hf-repo local/{shipped.name} --hf-file model-Q8_0.gguf" in card
    assert f"ollama run hf.co/local/{shipped.name}" in card
    chosen = rows["pruned gguf-q8_0"]
    # the card's perplexity line compares the GGUF with the teacher over the same chunks
    assert f"| test_perplexity | {chosen['test_perplexity']:.4g} | {chosen['test_perplexity_reference']:.4g} |" in card
    assert f"| test_tokens | {chosen['test_tokens']} | {chosen['test_tokens']} |" in card
    reloaded = AutoModelForCausalLM.from_pretrained(shipped, gguf_file="model-Q8_0.gguf")
    assert reloaded.config.intermediate_size == teacher.config.intermediate_size // 2


def test_llama_perplexity_reads_the_running_estimate_when_it_prints_no_final_line(monkeypatch):
    """llama-perplexity prints "Unexpected negative standard deviation" instead of its final line when the
    log-probabilities' variance rounds to <= 0 (seen on tiny near-uniform models): its last running estimate
    is then the figure."""
    import hfcompress.quantization.llama_cpp_tools as tools

    monkeypatch.setattr(tools, "find_tool", lambda name: name)
    printed = "[1]31965.2346,[2]31581.8730,[3]31766.7733,\nUnexpected negative standard deviation of log(prob)\n"
    monkeypatch.setattr(tools, "_run", lambda cmd, what, env=None: printed)
    assert tools.llama_perplexity("m.gguf", "t.txt", 64) == {"perplexity": 31766.7733, "error": None}
    printed = "[1]23.5,[2]23.4,\nFinal estimate: PPL = 23.4000 +/- 0.51000\n"
    assert tools.llama_perplexity("m.gguf", "t.txt", 64) == {"perplexity": 23.4, "error": 0.51}
    printed = "failed to tokenize\n"
    with pytest.raises(HfCompressError, match="llama-perplexity printed no perplexity for m.gguf"):
        tools.llama_perplexity("m.gguf", "t.txt", 64)
