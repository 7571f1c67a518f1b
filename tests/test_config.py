"""Training settings are checked before anything starts, naming the bad setting."""

from __future__ import annotations

import math

import pytest

from core.jobdir.config import PRESETS, ConfigError, load_config, parse_override


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.toml")))
def test_every_preset_loads(preset):
    config = load_config(preset)
    assert config.lora_rank >= 1 and config.epochs > 0


def test_overrides_win_over_the_preset():
    config = load_config("quick", dict(parse_override(t) for t in ["lr=1e-4", 'target_modules=["q_proj"]']))
    assert config.lr == 1e-4
    assert config.target_modules == ["q_proj"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"lora_rank": 0}, "lora_rank"),
        ({"lr": math.nan}, "lr"),
        ({"lr": "nan"}, "lr"),
        ({"learning_rate": 1e-4}, "'learning_rate'"),
        ({"epochs": "two"}, "epochs"),
        ({"qlora": 1}, "qlora"),
        ({"seq_len": 4}, "seq_len"),
        ({"dtype": "float8"}, "dtype"),
        # Huge numbers are refused where they enter: 1e23 steps once locked every job command.
        ({"max_steps": 10**23}, "max_steps must be between 0 and 10,000,000"),
        ({"epochs": 1e20}, "epochs must be above 0 and at most 1000"),
        ({"seed": 2**70}, "seed"),
        ({"save_every": 10**30}, "save_every"),
        ({"qlora": True, "shard_weights": True}, "shard_weights and qlora cannot both be on"),
    ],
)
def test_bad_settings_are_refused_by_name(overrides, named):
    with pytest.raises(ConfigError, match=named):
        load_config("quick", overrides)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="balanced, quick, thorough"):
        load_config("fastest")


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("lr")


def test_each_preset_says_what_it_is_for_from_its_own_file():
    from core.jobdir.config import PRESET_NAMES, preset_description

    said = {name: preset_description(name) for name in PRESET_NAMES}
    assert said["quick"] == "a first look in minutes. One pass over the dataset with a small adapter."
    assert said["thorough"].endswith("so that a run past its best does no harm.")  # its two comment lines
    assert all("tunedesk" not in text for text in said.values())  # the usage line is not part of it
