"""Typed settings from commented YAML: keys equal fields, unknown keys and bad values refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from m3fmarl import registry
from m3fmarl.config import CONFIG_DIR, ConfigError, PPOSettings, from_dict, load, load_algorithm, settings_class


@pytest.mark.parametrize("name", registry.names())
def test_every_algorithm_yaml_has_exactly_the_fields_and_a_comment_per_key(name: str) -> None:
    path = CONFIG_DIR / "algorithms" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    assert list(data) == [f.name for f in dataclasses.fields(settings_class(name))]
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
    with pytest.raises(ConfigError, match="unknown algorithm 'sac'; valid: ippo, mappo, m3fa2c, m3fppo, mfppo"):
        load_algorithm("sac")


CHANGED = {  # a valid other value for every settings field
    "gamma": 0.95, "lambda_": 0.9, "lr": 1e-4, "clip_param": 0.3, "use_kl_loss": False, "kl_coeff": 0.5,
    "kl_target": 0.05, "vf_loss_coeff": 0.5, "entropy_coeff": 0.01, "vf_clip_param": 5.0, "grad_clip": 7.0,
    "train_batch_size": 48_000, "minibatch_size": 2_000, "num_epochs": 4, "num_envs_per_env_runner": 60,
    "minibatching": "shuffled", "rollout_fragment_length": 10, "deepset_form": "pairwise", "deepset_hidden": 64,
    # HMF
    "rollout_steps": 2, "training_intensity": 2.0, "replay_capacity": 50_000, "learning_starts": 500, "tau": 0.02,
    "epsilon_initial": 0.5, "epsilon_final": 0.1, "exploration_fraction": 0.5, "hidden": 128, "key_dim": 32,
    "gmf_actions": True, "num_groups": 3, "grouping": "bins", "ipc_iterations": 5, "reward_mode": "sum",
    "alpha": 0.1, "group_kl_coeff": 0.1,
}


def _config_dict(name: str, settings: object) -> dict:
    cfg = registry.get(name).build_config("potential", 5, "reference", seed=0, settings=settings)
    return {k: v for k, v in cfg.to_dict().items() if k not in ("callbacks_class",)}


@pytest.mark.parametrize("name", registry.names())
def test_every_setting_in_the_yaml_reaches_the_built_rllib_config(name: str, tmp_path: Path) -> None:
    """The settings dataclass (its YAML) is the only source of the hyperparameters: changing any one
    value in the YAML changes the RLlib config the algorithm's builder makes."""
    default = load_algorithm(name)
    base = _config_dict(name, default)
    for field in dataclasses.fields(default):
        assert field.name in CHANGED, f"{name}: add a changed value for {field.name}"
        data = {**dataclasses.asdict(default), field.name: CHANGED[field.name]}
        path = tmp_path / f"{name}-{field.name}.yaml"
        path.write_text(yaml.safe_dump(data))
        changed = load_algorithm(name, path)
        assert getattr(changed, field.name) == CHANGED[field.name]
        assert _config_dict(name, changed) != base, f"{name}: {field.name} does not reach the RLlib config"


def test_settings_reach_the_ppo_config() -> None:
    """The settings reach RLlib's PPOConfig (variant defaults where the YAML says null)."""
    from m3fmarl.algorithms import m3fppo_config

    s = dataclasses.replace(PPOSettings(), lr=1e-4, minibatch_size=2_000, vf_clip_param=None)
    cfg = m3fppo_config("beach-bar", 5, "reference", settings=s)
    assert cfg.lr == 1e-4 and cfg.minibatch_size == 2_000 and cfg.num_epochs == 8
    assert (cfg.kl_coeff, cfg.kl_target) == (0.2, 0.03)
    assert cfg.learner_config_dict["rllib18_vf_clip_param"] is None
    paper = m3fppo_config("beach-bar", 5, "paper", settings=PPOSettings())
    assert (paper.kl_coeff, paper.kl_target) == (0.03, 0.01)
    # keyword overrides that name a settings field replace it; others are PPOConfig attributes
    assert m3fppo_config("beach-bar", 5, lr=2e-4, settings=s).lr == 2e-4
    with pytest.raises(TypeError, match="PPOSettings"):
        m3fppo_config("beach-bar", 5, settings=object())


def test_a2c_settings_reach_the_a2c_config() -> None:
    from m3fmarl.algorithms import m3fa2c_config
    from m3fmarl.config import A2CSettings

    s = load_algorithm("m3fa2c")
    assert s == A2CSettings() and s.grad_clip == 40.0
    cfg = m3fa2c_config("potential", 5, "reference", settings=dataclasses.replace(s, lr=2e-4))
    assert cfg.lr == 2e-4 and cfg.grad_clip == 40.0 and cfg.num_epochs == 1 \
        and cfg.learner_config_dict["m3fc_sampler"]["fragment"] == 20
    with pytest.raises(ConfigError, match="must be a multiple of"):
        A2CSettings(num_envs_per_env_runner=64)
