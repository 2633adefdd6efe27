"""GGUF, the file llama.cpp, Ollama and LM Studio load (and transformers, with ``gguf_file=``), written with the
``gguf`` package: its writer, its tensor-name map and its numpy quantizers (F16, Q8_0, Q4_0, ...).

    export_gguf("outputs/distill_llm/student", "student-Q8_0.gguf", "Q8_0")

What it writes, as llama.cpp's own converter does for a Llama-architecture model:
- the hyperparameters under ``llama.*`` (heads, KV heads, head size, rope, norm epsilon, context length);
- every weight under its GGUF name; the q and k projections with their rows permuted to the interleaved
  rotary layout llama.cpp uses (transformers' GGUF loader undoes it); the 2-D weights in the chosen type,
  except the output matrix (the token embedding when tied), which stays at 8 bits under a 4- or 5-bit type as
  in llama.cpp's own files; norms in F32; no ``output.weight`` when the embeddings are tied;
- the tokenizer (byte-level BPE: tokens, token types, merges, special ids) and its chat template.

Only what the format can express is accepted: a Llama-architecture model (Llama, SmolLM2, ...) whose layers
all have the same shape. Anything else is refused, before a byte is written, with the reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import HfCompressError
from ..modeling import per_layer_shapes, stop_token_ids
from ..modeling.families import rope_settings

GGUF_TYPES = ("F32", "F16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")  # the gguf package's numpy quantizers
ARCHITECTURES = {"llama": "llama"}  # transformers model_type -> GGUF architecture


def check_gguf_source(config: dict, qtype: str) -> None:
    """A one-line error for a model or a type GGUF can't hold, before any work."""
    if qtype not in GGUF_TYPES:
        raise HfCompressError(f"GGUF type must be one of {', '.join(GGUF_TYPES)}, got {qtype!r}")
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        raise HfCompressError(
            f"GGUF export supports the {', '.join(ARCHITECTURES)} architecture, got model_type {kind!r}"
        )
    for key, value in per_layer_shapes(config).items():
        raise HfCompressError(
            f"GGUF needs every layer to have the same shape; this model's {key} differs per layer ({value})"
        )
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise HfCompressError("GGUF export of Llama models with attention or MLP biases is not supported")
    scaling = rope_settings(config)[1]
    if scaling:
        raise HfCompressError(f"GGUF export with rope scaling {scaling} is not supported")
    if qtype.startswith("Q"):
        import gguf

        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]][0]
        widths = {"hidden_size": config["hidden_size"], "intermediate_size": config["intermediate_size"]}
        bad = {k: v for k, v in widths.items() if v % block}
        if bad:
            raise HfCompressError(
                f"GGUF {qtype} quantizes rows in blocks of {block}; {', '.join(f'{k} {v}' for k, v in bad.items())} "
                f"doesn't divide: choose F16 or prune to a multiple of {block}"
            )


def check_gguf_tokenizer(model_dir: str | os.PathLike) -> str:
    """A one-line error for a tokenizer llama.cpp would not reproduce (not byte-level BPE, or split otherwise
    than GPT-2/SmolLM2), before any work; else llama.cpp's pre-tokenizer name."""
    file = Path(model_dir) / "tokenizer.json"
    if not file.is_file():
        raise HfCompressError(f"GGUF export needs the model's tokenizer.json (a fast tokenizer) in {model_dir}")
    backend = json.loads(file.read_text())
    if backend["model"].get("type") != "BPE":
        raise HfCompressError(f"GGUF export supports byte-level BPE tokenizers, got a {backend['model'].get('type')} one")
    return pre_tokenizer_type(backend.get("pre_tokenizer"))


def gguf_type(method: str) -> str:
    """'gguf-q8_0' -> 'Q8_0'."""
    return method.split("-", 1)[1].upper()


def gguf_file_name(method: str) -> str:
    """The file a ``quantize(method='gguf-...')`` folder holds: ``model-Q8_0.gguf``."""
    return f"model-{gguf_type(method)}.gguf"


def permute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """q/k rows from the half-split rotary layout of transformers to llama.cpp's interleaved one."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def output_type(qtype: str) -> str:
    """The type of the output matrix (the token embedding when tied): Q8_0 under a 4- or 5-bit type, as
    llama.cpp's own quantizer keeps it at 6 or 8 bits; else ``qtype``."""
    return "Q8_0" if qtype[:2] in ("Q4", "Q5") else qtype


def export_gguf(
    model_dir: str | os.PathLike, out_file: str | os.PathLike, qtype: str = "Q8_0", embedding_type: str | None = None
) -> Path:
    """Write the causal LM saved in ``model_dir`` (with its tokenizer) as one GGUF file of type ``qtype``.
    ``embedding_type``: the type of the output matrix and the token embedding (default ``output_type(qtype)``)."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, out_file = Path(model_dir), Path(out_file)
    config = json.loads((model_dir / "config.json").read_text())
    check_gguf_source(config, qtype)
    check_gguf_tokenizer(model_dir)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    arch = ARCHITECTURES[config["model_type"]]
    layers = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    embedding_type = embedding_type or output_type(qtype)
    check_gguf_source(config, embedding_type)

    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(f".{out_file.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(partial), arch)
    written = False
    try:
        writer.add_name(model_dir.name)
        writer.add_context_length(config.get("max_position_embeddings", 2048))
        writer.add_embedding_length(config["hidden_size"])
        writer.add_block_count(layers)
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(rope_settings(config)[0])
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
        writer.add_vocab_size(config["vocab_size"])
        writer.add_file_type(_file_type(gguf, qtype))
        _add_tokenizer(writer, tokenizer, config["vocab_size"], stop_token_ids(model, tokenizer))
        tied = config.get("tie_word_embeddings", False)
        for name, tensor in model.state_dict().items():
            if tied and name == "lm_head.weight":
                continue  # llama.cpp reads token_embd for the output when output.weight is absent
            gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise HfCompressError(f"GGUF export: no GGUF name for weight {name!r}")
            data = tensor.detach().float().numpy()
            if name.endswith("self_attn.q_proj.weight"):
                data = permute_rotary(data, heads)
            elif name.endswith("self_attn.k_proj.weight"):
                data = permute_rotary(data, kv_heads)
            kind = embedding_type if gguf_name in ("token_embd.weight", "output.weight") else qtype
            if data.ndim == 2 and kind != "F32":  # matrices in the chosen type; norms stay F32
                target = gguf.GGMLQuantizationType[kind]
                writer.add_tensor(gguf_name, gguf.quants.quantize(data, target), raw_dtype=target)
            else:
                writer.add_tensor(gguf_name, data.astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        written = True
    finally:
        writer.close()
        if not written:
            partial.unlink(missing_ok=True)  # no half-written file left behind
    partial.replace(out_file)
    return out_file


def _file_type(gguf, qtype: str):
    return getattr(gguf.LlamaFileType, "ALL_F32" if qtype == "F32" else f"MOSTLY_{qtype}")


def pre_tokenizer_type(pre: dict | None) -> str:
    """llama.cpp's name for the way this tokenizer splits text before BPE (``tokenizer.ggml.pre``): GPT-2's
    pattern ("gpt-2"), or GPT-2's after single digits are split off ("smollm", as SmolLM2 on the Hub). llama.cpp
    splits any other way with a different pattern, so a GGUF would tokenize differently: refused."""
    def byte_level(p: dict) -> bool:
        return p.get("type") == "ByteLevel" and p.get("use_regex", True)

    parts = (pre or {}).get("pretokenizers") if (pre or {}).get("type") == "Sequence" else [pre or {}]
    if len(parts) == 1 and byte_level(parts[0]):
        return "gpt-2"
    if (len(parts) == 2 and parts[0].get("type") == "Digits" and parts[0].get("individual_digits")
            and byte_level(parts[1])):  # fmt: skip
        return "smollm"
    raise HfCompressError(
        "GGUF export supports byte-level BPE tokenizers that split text as GPT-2 does (optionally digits first, "
        f"as SmolLM2); this one's pre-tokenizer is {json.dumps(pre)[:200]}, which llama.cpp would split otherwise"
    )


def _add_tokenizer(writer, tokenizer, vocab_size: int, stop_ids: list[int]) -> None:
    """A byte-level BPE tokenizer as llama.cpp's 'gpt2' model: tokens by id, their types, merges, special ids
    (the end-of-turn id from the model's generation config, where it is not the EOS: llama.cpp stops on both),
    and the chat template."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend["model"]
    if model.get("type") != "BPE":
        raise HfCompressError(f"GGUF export supports byte-level BPE tokenizers, got a {model.get('type')} one")
    vocab = {**model["vocab"], **{t["content"]: t["id"] for t in backend.get("added_tokens", [])}}
    by_id = {i: token for token, i in vocab.items()}
    special = set(tokenizer.all_special_ids)
    tokens, types = [], []
    for i in range(vocab_size):  # the embedding may have more rows than the tokenizer has tokens: padding
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(3 if i in special else 1 if i in by_id else 5)  # control, normal, unused
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_type(backend.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    # without a BOS token, the EOS id stands in and is never added (readers expect a BOS id: transformers'
    # GGUF tokenizer converter fails without one)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and bool(getattr(tokenizer, "add_bos_token", False)))
    for key, value in (("bos", bos), ("eos", tokenizer.eos_token_id), ("pad", tokenizer.pad_token_id),
                       ("unk", tokenizer.unk_token_id)):  # fmt: skip
        if value is not None:
            getattr(writer, f"add_{key}_token_id")(value)
    end_of_turn = [i for i in stop_ids if i != tokenizer.eos_token_id]
    if end_of_turn:
        writer.add_eot_token_id(end_of_turn[0])
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)
