"""Shared fixtures: offline environment and tiny random models/tokenizers built from configs (no downloads)."""

import os
import socket
import subprocess
import sys

import pytest

# Offline before anything imports huggingface_hub: a warm cache or a reachable Hub must not hide a gap.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# The developer's asset cache, read before the autouse fixture below points HFCOMPRESS_CACHE at an empty folder.
USER_ASSET_CACHE = (
    os.environ.get("HFCOMPRESS_TEST_CACHE")
    or os.environ.get("HFCOMPRESS_CACHE")
    or os.path.join(os.path.expanduser("~"), ".cache", "hfcompress")
)

WORDS = (
    "the a an film movie story plot actor acting great good bad awful boring fun funny dull brilliant "
    "script scene scenes director music score is was not very too much and but with of to it this that "
    "fresh rotten love hate best worst ever never again watch watching loved hated"
).split()


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HFCOMPRESS_CACHE", str(tmp_path_factory.mktemp("hfc_cache")))
    monkeypatch.delenv("HFCOMPRESS_LLAMA_CPP", raising=False)  # GGUF: the package's own writer unless a test asks


# llama.cpp's own tools (make setup-llama-tools), found before the fixture above hides them
USER_LLAMA_CPP = os.environ.get("HFCOMPRESS_LLAMA_CPP") or os.path.join(USER_ASSET_CACHE, "llama.cpp")


@pytest.fixture
def llama_cpp_tools(monkeypatch):
    """llama.cpp's converter and tools for this test; skipped, with the install command, where they are missing."""
    from hfcompress.quantization.llama_cpp_tools import tools_available

    monkeypatch.setenv("HFCOMPRESS_LLAMA_CPP", USER_LLAMA_CPP)
    if not tools_available():
        pytest.skip(f"llama.cpp's tools (in {USER_LLAMA_CPP}) or sentencepiece are missing: run `make setup-llama-tools`")
    return USER_LLAMA_CPP


def write_vocab(path, words=WORDS, shift=0):
    """A WordPiece vocab; ``shift`` adds unused tokens first so the same words get other ids."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    filler = [f"[unused{i}]" for i in range(shift)]
    tokens = filler + specials + list(words) if shift else specials + list(words)
    path.write_text("\n".join(tokens) + "\n")
    return path


def make_tokenizer(tmp_path, shift=0):
    """A BERT WordPiece tokenizer loaded from a folder, as users load one (works in transformers 4.x and 5.x)."""
    import json

    from transformers import AutoTokenizer

    folder = tmp_path / f"tokenizer{shift}"
    folder.mkdir(exist_ok=True)
    write_vocab(folder / "vocab.txt", shift=shift)
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    return AutoTokenizer.from_pretrained(folder)


def make_bert(num_layers=4, hidden=32, heads=4, vocab_size=None, num_labels=2, seed=0, tokenizer=None):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size or (len(tokenizer) if tokenizer is not None else 100),
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config)


@pytest.fixture
def tokenizer(tmp_path):
    return make_tokenizer(tmp_path)


def make_text_dataset(n=64, seed=0):
    """Sentences whose label is learnable from words (positive vs negative words)."""
    import random

    import datasets

    rng = random.Random(seed)
    positive = ["great", "good", "brilliant", "fun", "loved", "best"]
    negative = ["bad", "awful", "boring", "dull", "hated", "worst"]
    filler = ["the", "film", "movie", "story", "was", "very", "acting", "script", "music"]
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(filler, 4) + rng.sample(positive if label else negative, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return datasets.Dataset.from_list(rows)


def launch_two_processes(script_and_args, cwd=None, timeout=600):
    """Run a script under ``accelerate launch --multi_gpu --num_processes 2`` on the CPU (two gloo processes).

    ``--cpu --num_processes 2`` silently starts ONE process (docs/scaling.md); ``--multi_gpu`` on a machine
    without GPUs starts two, and DistillationConfig turns ``use_cpu`` on so they form a gloo group.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        *map(str, script_and_args),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def load_recipe(name: str):
    """The module of ``recipes/<name>.py`` (recipes are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_llama(num_layers=4, hidden=32, heads=4, kv_heads=2, vocab_size=320, intermediate=64, seed=0):
    """A tiny random Llama causal LM (tied embeddings, as SmolLM2); 320 ids: the vocabulary of
    ``make_bpe_tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=3,
        eos_token_id=2,
        pad_token_id=4,
    )
    return LlamaForCausalLM(config).eval()


def make_lm_blocks(n=16, length=24, vocab_size=320, seed=0):
    """A datasets.Dataset of token blocks with labels (a causal LM's training rows): random ids past the
    special tokens of ``make_bpe_tokenizer``."""
    import datasets
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (n, length), generator=generator).tolist()
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "attention_mask": [[1] * length] * n, "labels": [list(r) for r in ids]}
    )


# -- a real byte-level BPE tokenizer, trained in the test (no downloads) ------------------------------------
BPE_CORPUS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune must be in "
    "want of a wife.",
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition, seemed to "
    "unite some of the best blessings of existence.",
    "The family of Dashwood had long been settled in Sussex. Their estate was large, and their residence was "
    "at Norland Park.",
    "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own amusement, never took "
    "up any book but the Baronetage.",
    "Summarise this paragraph. Continue this passage. What did she say? She said nothing at all.",
    "User: hello there! Assistant: good morning, how can I help you today? 0123456789",
]
# ChatML, as SmolLM2 and Qwen use: the assistant turn is '<|im_start|>assistant\n' ... '<|im_end|>\n'.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_bpe_tokenizer(folder, pad=True, bos=False, padding_side="right", chat_template=True, vocab_size=320):
    """A byte-level BPE trained on a few sentences with the ``tokenizers`` library, saved and reloaded with
    ``AutoTokenizer`` as users load one. ``pad=False`` is a Llama-3-style tokenizer without a pad token;
    ``bos=True`` prepends ``<|begin_of_text|>`` to every encoding."""
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(folder)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<pad>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        BPE_CORPUS,
        trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    if bos:
        bos_id = backend.token_to_id("<|begin_of_text|>")
        backend.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B", special_tokens=[("<|begin_of_text|>", bos_id)]
        )
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    extra = {"pad_token": "<pad>"} if pad else {}
    if bos:
        extra["bos_token"] = "<|begin_of_text|>"
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        padding_side=padding_side, **extra,
    )  # fmt: skip
    if chat_template:
        wrapped.chat_template = CHATML
    wrapped.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture
def bpe_tokenizer(tmp_path):
    return make_bpe_tokenizer(tmp_path / "bpe")


# Tiny random configs of every decoder family the LM features claim (hfcompress.modeling.FAMILIES).
FAMILY_CONFIGS = {
    "llama": {"tie_word_embeddings": False},  # untied head, as Llama 3
    "mistral": {},
    "qwen2": {},  # attention bias
    "qwen3": {"head_dim": 8},  # q/k norms
    "gemma2": {"head_dim": 8, "final_logit_softcapping": 0.05, "query_pre_attn_scalar": 8},
    "gemma3_text": {"head_dim": 8, "final_logit_softcapping": 0.05, "query_pre_attn_scalar": 8},
    "phi3": {},  # fused qkv_proj and gate_up_proj
    "granite": {"logits_scaling": 4.0, "embedding_multiplier": 2.0, "residual_multiplier": 0.5},
    # the released models' own quirks, at tiny sizes (a "model_type" key: a shape of that family)
    "llama-3.1": {"model_type": "llama", "tie_word_embeddings": False, "rope_theta": 500000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}},  # fmt: skip
    "qwen2.5": {"model_type": "qwen2", "rope_theta": 1000000.0, "tie_word_embeddings": True},  # q/k/v biases
    "gemma-2": {"model_type": "gemma2", "head_dim": 8, "query_pre_attn_scalar": 8, "final_logit_softcapping": 30.0,
                "attn_logit_softcapping": 50.0, "sliding_window": 6},  # fmt: skip
    "gemma-3": {"model_type": "gemma3_text", "head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 6,
                "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear",
                "factor": 8.0}, "layer_types": ["sliding_attention", "sliding_attention", "full_attention"] * 2},  # fmt: skip
    "phi-3.5": {"model_type": "phi3", "original_max_position_embeddings": 64, "rope_scaling": {"type": "longrope",
                "short_factor": [1.0, 1.125, 1.25, 1.375], "long_factor": [2.0, 3.0, 4.0, 5.0]}},  # fmt: skip
}


def make_decoder(family, vocab_size=320, num_layers=4, hidden=32, heads=4, kv_heads=2, intermediate=64, seed=0):
    """A tiny random causal LM of ``family`` (a key of FAMILY_CONFIGS: a model type, or a released model's shape
    of one) in fp32, eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    extra = dict(FAMILY_CONFIGS[family])
    model_type = extra.pop("model_type", family)
    if isinstance(extra.get("layer_types"), list):  # the family's pattern, cut to this depth
        extra["layer_types"] = extra["layer_types"][:num_layers]
    config = AutoConfig.for_model(
        model_type, vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=256, pad_token_id=4, bos_token_id=3, eos_token_id=2, **extra,
    )  # fmt: skip
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


_SHARED_BPE = {}


def shared_bpe_tokenizer():
    """One ``make_bpe_tokenizer()`` per test session (training it takes a fraction of a second, loading more)."""
    if "tokenizer" not in _SHARED_BPE:
        import tempfile

        _SHARED_BPE["tokenizer"] = make_bpe_tokenizer(tempfile.mkdtemp(prefix="hfc-bpe-"))
    return _SHARED_BPE["tokenizer"]


# -- held-out paragraphs for the harness tasks: sentences of Austen's openings, in seeded orders --------------
SENTENCES = [
    "It is a truth universally acknowledged that a single man must be in want of a wife.",
    "Emma Woodhouse was handsome, clever, and rich.",
    "The family of Dashwood had long been settled in Sussex.",
    "Sir Walter Elliot never took up any book but the Baronetage.",
    "She said nothing at all.",
    "What did she say?",
    "Their estate was large, and their residence was at Norland Park.",
    "He was the proprietor of Kellynch Hall in Somersetshire.",
]


def held_out_text(paragraphs=12, seed=0) -> str:
    """Paragraphs of 4-6 of ``SENTENCES``, in a seeded order, separated by blank lines."""
    import random

    rng = random.Random(seed)
    return "\n\n".join(" ".join(rng.sample(SENTENCES, rng.randint(4, 6))) for _ in range(paragraphs))


KILL_AT_STEP = """
import os, signal, sys
from transformers import TrainerCallback
from hfcompress.pipeline import run_pipeline

class KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)

run_pipeline(sys.argv[1], callbacks=[KillAtStep()])
"""


def run_pipeline_killed_at_step(config, step: int = 5):
    """Run the pipeline of ``config`` in a new process that SIGKILLs itself at training step ``step``; returns
    the finished process (its return code is -9 when it was killed)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", KILL_AT_STEP, str(config), str(step)], capture_output=True, text=True)


def real_chat_tokenizer(vocab: str, template: str | None = None, extra_special: tuple[str, ...] = ()):
    """A real tokenizer converted from llama.cpp's vocabulary (the ``llama_cpp_vocab`` asset, which ``make test``
    fetches into the developer's cache), with a real model's chat template from llama.cpp's
    ``models/templates``; skips, naming the command, when the asset was not fetched."""
    from pathlib import Path

    from transformers import AutoTokenizer

    cache = Path(USER_ASSET_CACHE)
    root = cache / "llama_cpp_vocab"
    if not (root / ".hfcompress-complete").exists():
        pytest.skip(f"real tokenizers not fetched into {cache}: run `make test-assets` (or make test)")
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizers" / vocab)
    if extra_special:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special)})
    if template is not None:
        tokenizer.chat_template = (root / "models" / "templates" / f"{template}.jinja").read_text()
        tokenizer.name_or_path = template
    return tokenizer


def sentencepiece_model_from_gguf(vocab_gguf, out_file, size: int = 32000):
    """A SentencePiece ``tokenizer.model`` of the first ``size`` pieces (the SentencePiece part; the later ids are
    the model's added tokens, which its tokenizer.json holds) of one of llama.cpp's vocab-only GGUFs of an SPM
    tokenizer, with their scores, as the released model ships it: what llama.cpp's converter reads for Phi-3 and
    Llama 2-style models. Types as SentencePiece has them: <unk> unknown, <s> and </s> control, <0x..> bytes."""
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as spm

    reader = gguf.GGUFReader(vocab_gguf)

    def values(key):
        field = reader.fields[key]
        return [field.parts[i] for i in field.data]

    proto = spm.ModelProto()
    for i, (token, score) in enumerate(zip(values("tokenizer.ggml.tokens")[:size], values("tokenizer.ggml.scores"))):
        piece = proto.pieces.add()
        piece.piece, piece.score = bytes(token).decode("utf-8"), float(score[0])
        kind = spm.ModelProto.SentencePiece
        piece.type = kind.UNKNOWN if i == 0 else kind.CONTROL if i in (1, 2) else kind.NORMAL
        if piece.piece.startswith("<0x") and len(piece.piece) == 6:
            piece.type = kind.BYTE
    proto.trainer_spec.model_type = spm.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(proto.pieces)
    proto.trainer_spec.byte_fallback = True
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    with open(out_file, "wb") as f:
        f.write(proto.SerializeToString())
    return out_file


def llama_cpp_models_dir():
    from pathlib import Path

    return Path(USER_ASSET_CACHE) / "llama_cpp_vocab" / "models"
