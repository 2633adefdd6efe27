"""DistillationConfig validation, strict parsing, and every YAML under recipes/configs."""

from pathlib import Path

import pytest
from conftest import load_recipe

from hfcompress import DistillationConfig, HfCompressError
from hfcompress.configs import DataArguments, DistillRecipeArguments
from hfcompress.distillation.config import parse_layer_map
from hfcompress.parser import parse_config
from hfcompress.pipeline import load_pipeline_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE_TYPES = (DistillRecipeArguments, DataArguments, DistillationConfig)
YAMLS = sorted((ROOT / "recipes" / "configs").rglob("*.yaml"))
DISTILL_YAML = ROOT / "recipes/configs/minilm/rotten_tomatoes/distill_default.yaml"


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


def test_every_config_is_found():
    """The YAML glob is recursive and sees every shipped config (a moved folder would silently test nothing)."""
    shipped = {p.name for p in (ROOT / "recipes" / "configs" / "minilm" / "rotten_tomatoes").glob("*.yaml")}
    assert shipped and shipped <= {p.name for p in YAMLS}


def launch_target(path):
    """(recipe name, config path) from the YAML's '# Launch: accelerate launch recipes/X.py --config Y' line."""
    line = next(line for line in path.read_text().splitlines() if line.startswith("# Launch:"))
    words = line.split()
    script = next(w for w in words if w.startswith("recipes/") and w.endswith(".py"))
    return Path(script).stem, words[words.index("--config") + 1]


@pytest.mark.parametrize("path", YAMLS, ids=[str(p.relative_to(ROOT)) for p in YAMLS])
def test_every_recipe_yaml_parses(path):
    """Each YAML names its recipe and itself in its launch line, and parses against that recipe's own
    CONFIG_TYPES (the dataclasses the script declares)."""
    name, config = launch_target(path)
    assert ROOT / config == path, f"{path.name}'s launch line names {config}"
    recipe_module = load_recipe(name)
    if not hasattr(recipe_module, "CONFIG_TYPES"):  # recipes/compress.py: a pipeline of stages
        pipeline = load_pipeline_config(path)
        assert pipeline.names[-1] in ("evaluate", "share") and pipeline.data.dataset_name
        return
    parsed = parse_config(recipe_module.CONFIG_TYPES, ["--config", str(path)])
    assert [type(p) for p in parsed] == list(recipe_module.CONFIG_TYPES)
    recipe, data = parsed[0], parsed[1]
    model = getattr(recipe, "teacher_model_name_or_path", None) or recipe.model_name_or_path
    args = next(p for p in parsed if hasattr(p, "output_dir"))
    assert model and data.dataset_name and args.output_dir


@pytest.mark.parametrize("script", sorted((ROOT / "recipes").glob("*.py")), ids=lambda p: p.name)
def test_configs_named_in_recipe_docstrings_exist(script):
    """Every config path a recipe's docstring names exists (prune_bert once named one that did not)."""
    named = [w for w in (load_recipe(script.stem).__doc__ or "").split() if w.endswith(".yaml")]
    assert named, f"{script.name} names no config"
    missing = [w for w in named if not (ROOT / w).is_file()]
    assert not missing


def test_cli_overrides_yaml(tmp_path):
    path = DISTILL_YAML
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


def test_null_on_the_command_line_resets_an_optional_field():
    _, data, _ = parse_config(RECIPE_TYPES, ["--config", str(DISTILL_YAML), "--max_train_samples", "null"])
    assert data.max_train_samples is None
    _, data, _ = parse_config(RECIPE_TYPES, ["--config", str(DISTILL_YAML), "--max_train_samples", "5"])
    assert data.max_train_samples == 5


def test_help_lists_fields_with_their_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(RECIPE_TYPES, ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--temperature" in text and "Softmax temperature for the KD term" in text
    assert "--max_train_samples" in text


def test_null_clears_an_optional_field_with_a_default():
    from hfcompress.configs import DistillLLMRecipeArguments, LMDataArguments

    _, data = parse_config((DistillLLMRecipeArguments, LMDataArguments), ["--ood_dataset_name", "null"])
    assert data.ood_dataset_name is None
