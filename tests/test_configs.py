"""DistillationConfig validation, strict parsing, and every YAML under recipes/configs."""

from pathlib import Path

import pytest

from hfcompress import DistillationConfig, HfCompressError
from hfcompress.configs import DataArguments, DistillRecipeArguments, recipe_config_types
from hfcompress.distillation.config import parse_layer_map
from hfcompress.parser import parse_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE_TYPES = (DistillRecipeArguments, DataArguments, DistillationConfig)
YAMLS = sorted((ROOT / "recipes" / "configs").rglob("*.yaml"))


def config(tmp_path, **kwargs):
    return DistillationConfig(output_dir=str(tmp_path), report_to=[], **kwargs)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"temperature": 0.0}, "temperature must be > 0, got 0.0"),
        ({"temperature": -2}, "temperature must be > 0"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
        ({"alpha": -0.1}, r"alpha must be in \[0, 1\]"),
        ({"hidden_mse_weight": -1}, "hidden_mse_weight must be >= 0"),
        ({"teacher_dtype": "int8"}, "teacher_dtype must be one of"),
        ({"hidden_layer_map": "1-2"}, "is not 'student:teacher' integers"),
        ({"cache_teacher_logits": True, "hidden_mse_weight": 1.0}, "caches logits only"),
        ({"remove_unused_columns": True}, "remove_unused_columns must be false"),
    ],
)
def test_bad_config_values(tmp_path, kwargs, message):
    with pytest.raises(HfCompressError, match=message):
        config(tmp_path, **kwargs)


def test_layer_map_parsing():
    assert parse_layer_map("auto") is None
    assert parse_layer_map("1:2, 2:4,3:6") == [(1, 2), (2, 4), (3, 6)]


def test_recipe_argument_checks():
    with pytest.raises(HfCompressError, match="tokenizer_mode must be one of"):
        DistillRecipeArguments(tokenizer_mode="both")
    with pytest.raises(HfCompressError, match="latency_batch_sizes"):
        DistillRecipeArguments(latency_batch_sizes="1,x")
    with pytest.raises(HfCompressError, match="max_seq_length"):
        DataArguments(max_seq_length=2)


def test_yamls_exist():
    assert len(YAMLS) >= 3


@pytest.mark.parametrize("path", YAMLS, ids=[str(p.relative_to(ROOT)) for p in YAMLS])
def test_every_recipe_yaml_parses(path):
    """Each YAML against the dataclasses of the recipe its name starts with (distill_, prune_, quantize_,
    finetune_)."""
    parsed = parse_config(recipe_config_types(path.stem.split("_")[0]), ["--config", str(path)])
    recipe, data, args = parsed[0], parsed[1], parsed[2 if path.stem.startswith(("distill", "prune")) else 3]
    model = getattr(recipe, "teacher_model_name_or_path", None) or recipe.model_name_or_path
    assert args.output_dir and model and data.dataset_name


def test_cli_overrides_yaml(tmp_path):
    path = YAMLS[0]
    _, data, args = parse_config(
        RECIPE_TYPES, ["--config", str(path), "--temperature", "4", "--max_train_samples", "7"]
    )
    assert args.temperature == 4.0 and data.max_train_samples == 7


def test_unknown_yaml_key_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("temprature: 2.0\n")
    with pytest.raises(HfCompressError, match="unknown key 'temprature'.*did you mean 'temperature'"):
        parse_config(RECIPE_TYPES, ["--config", str(bad)])


def test_unknown_cli_flag_is_an_error():
    with pytest.raises(HfCompressError, match="unknown option --alpah"):
        parse_config(RECIPE_TYPES, ["--alpah", "0.3"])


def test_bad_values_from_yaml_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("alpha: 2.0\n")
    with pytest.raises(HfCompressError, match="alpha must be in"):
        parse_config(RECIPE_TYPES, ["--config", str(bad)])


def test_missing_config_file(tmp_path):
    with pytest.raises(HfCompressError, match="does not exist"):
        parse_config(RECIPE_TYPES, ["--config", str(tmp_path / "nope.yaml")])
