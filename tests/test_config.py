"""Typed settings from commented YAML: keys equal fields, unknown keys and bad values refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from m3fmarl.config import ALGORITHM_SETTINGS, CONFIG_DIR, ConfigError, PPOSettings, from_dict, load, load_algorithm


@pytest.mark.parametrize("name", sorted(ALGORITHM_SETTINGS))
def test_every_algorithm_yaml_has_exactly_the_fields_and_a_comment_per_key(name: str) -> None:
    path = CONFIG_DIR / "algorithms" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    assert list(data) == [f.name for f in dataclasses.fields(ALGORITHM_SETTINGS[name])]
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#") and ":" in line:
            assert lines[i - 1].startswith("#"), f"{path.name}: no comment above {line!r}"


def test_m3fppo_yaml_holds_the_paper_settings() -> None:
    """The YAML and the dataclass defaults state the same Table 3 values."""
    s = load_algorithm("m3fppo")
    assert s == PPOSettings()
    assert (s.gamma, s.lambda_, s.lr, s.clip_param, s.train_batch_size, s.minibatch_size, s.num_epochs) == (
        0.99, 1.0, 5e-5, 0.2, 24_000, 4_000, 8)


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"learning_rate": 1e-4}, "m3fppo.yaml: unknown key 'learning_rate'; valid: gamma, lambda_, lr"),
        ({"lr": "fast"}, "m3fppo.yaml: lr must be float, got 'fast'"),
        ({"num_epochs": 2.5}, "num_epochs must be int"),
        ({"use_kl_loss": 1}, "use_kl_loss must be bool"),
        ({"gamma": None}, "gamma may not be null"),
        ({"minibatch_size": 7000}, "minibatch_size (7000) must divide train_batch_size (24000)"),
        ({"gamma": 1.5}, "gamma must be in (0, 1]"),
        ({"kl_coeff": -1.0}, "kl_coeff must be > 0 or null"),
    ],
)
def test_bad_settings_are_refused_with_one_clear_line(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(PPOSettings, data, where="m3fppo.yaml")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_exponent_without_dot_is_a_float(tmp_path: Path) -> None:
    """PyYAML reads `lr: 5e-5` as a string; the loader still takes it as the number."""
    path = tmp_path / "m3fppo.yaml"
    path.write_text("lr: 5e-5\n")
    assert load(PPOSettings, path).lr == 5e-5


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load(PPOSettings, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load(PPOSettings, bad)
    with pytest.raises(ConfigError, match="unknown algorithm 'sac'; valid: m3fppo, m3fa2c"):
        load_algorithm("sac")


def test_overrides_build_the_ppo_config() -> None:
    """The settings reach RLlib's PPOConfig (variant defaults where the YAML says null)."""
    from m3fmarl.algorithms import m3fppo_config

    s = dataclasses.replace(PPOSettings(), lr=1e-4, minibatch_size=2_000, vf_clip_param=None)
    cfg = m3fppo_config("beach-bar", 5, "reference", **s.builder_kwargs("reference"))
    assert cfg.lr == 1e-4 and cfg.minibatch_size == 2_000 and cfg.num_epochs == 8
    assert (cfg.kl_coeff, cfg.kl_target) == (0.2, 0.03)
    assert cfg.learner_config_dict["rllib18_vf_clip_param"] is None
    paper = m3fppo_config("beach-bar", 5, "paper", **PPOSettings().builder_kwargs("paper"))
    assert (paper.kl_coeff, paper.kl_target) == (0.03, 0.01)


def test_a2c_settings_reach_the_a2c_config() -> None:
    from m3fmarl.algorithms import m3fa2c_config
    from m3fmarl.config import A2CSettings

    s = load_algorithm("m3fa2c")
    assert s == A2CSettings() and s.grad_clip == 40.0
    cfg = m3fa2c_config("potential", 5, "reference", **dataclasses.replace(s, lr=2e-4).builder_kwargs("reference"))
    assert cfg.lr == 2e-4 and cfg.grad_clip == 40.0 and cfg.num_epochs == 1 and cfg.learner_config_dict["m3fc_sampler"]["fragment"] == 20
    with pytest.raises(ConfigError, match="must be a multiple of"):
        A2CSettings(num_envs_per_env_runner=64)
