"""Config resolution: presets, overrides, coercion and the one-line errors."""

import pytest

from champion.agents.config import ConfigError, TrainConfig
from champion.runners.configure import apply_overrides, config_from_dict, parse_set_pairs, resolve_config


def test_cartpole_preset_is_applied_and_overrides_win():
    config, note = resolve_config("CartPole-v1", "ppo", {"ppo.epochs": "5", "seed": 3})
    assert note is None
    assert (config.ppo.num_steps, config.ppo.minibatch_size, config.ppo.gamma) == (32, 256, 0.98)
    assert config.ppo.epochs == 5 and config.seed == 3


def test_env_without_preset_gets_defaults_and_a_note():
    config, note = resolve_config("champion-test/Bandit-v0", "a2c")
    assert config.a2c == TrainConfig().a2c and config.network.normalize_observations is config.reward_scaling is True
    assert note == ("no preset for champion-test/Bandit-v0 with a2c: the defaults for any env (40-transition rollouts "
                    "of 5 steps x 8 envs, normalised observations and rewards); champion presets lists the tuned ones")


@pytest.mark.parametrize("num_envs, num_steps", [(8, 256), (16, 128), (1, 2048), (3, 704), (12, 176)])
def test_without_a_preset_a_ppo_rollout_holds_about_2048_transitions_whole_minibatches(num_envs, num_steps):
    config, note = resolve_config("Pendulum-v1", "ppo", {"num_envs": num_envs}, use_preset=False)
    assert config.ppo.num_steps == num_steps and (num_steps * num_envs) % config.ppo.minibatch_size == 0
    assert note.startswith(f"--no-preset: the defaults for any env ({num_steps * num_envs:,}-transition rollouts")
    chosen, _ = resolve_config("Pendulum-v1", "ppo", {"num_steps": 64}, use_preset=False)  # a given one stays
    preset, _ = resolve_config("CartPole-v1", "ppo")  # a preset keeps its own
    assert chosen.ppo.num_steps == 64 and (preset.ppo.num_steps, preset.network.normalize_observations) == (32, False)


def test_bare_key_means_the_selected_algorithm_or_network():
    config = apply_overrides(TrainConfig(algo="a2c"), {"learning_rate": "1e-3", "hidden_sizes": "[32, 16]"})
    assert config.a2c.learning_rate == 0.001
    assert config.ppo.learning_rate == TrainConfig().ppo.learning_rate
    assert config.network.hidden_sizes == (32, 16)


def test_values_are_coerced_to_the_field_type():
    config = apply_overrides(TrainConfig(), {"total_steps": "1e5", "ppo.value_clip_range": "null",
                                             "network.shared_torso": "true", "ppo.clip_range": "1"})
    assert config.total_steps == 100000 and isinstance(config.total_steps, int)
    assert config.ppo.value_clip_range is None
    assert config.network.shared_torso is True
    assert config.ppo.clip_range == 1.0 and isinstance(config.ppo.clip_range, float)


def test_set_null_unsets_optional_text_and_other_text_is_kept_as_given():
    config = apply_overrides(TrainConfig(), parse_set_pairs(["ray.address=null", "run_name=~"]))
    assert config.ray.address is None and config.run_name is None
    config = apply_overrides(TrainConfig(), parse_set_pairs(["ray.address=10.0.0.5:6379", "run_name=off"]))
    assert config.ray.address == "10.0.0.5:6379" and config.run_name == "off"
    config = apply_overrides(TrainConfig(), {"run_name": "null"})  # a run named null (--run-name, config.yaml)
    assert config.run_name == "null"
    with pytest.raises(ConfigError, match="network.activation must be text, got None"):
        apply_overrides(TrainConfig(), parse_set_pairs(["network.activation=NULL"]))


@pytest.mark.parametrize("key, value, message", [
    ("ppo.learning_rat", "1", "unknown config key 'ppo.learning_rat'; did you mean ppo.learning_rate?"),
    ("lerning_rate", "1", "did you mean ppo.learning_rate?"),
    ("total_steps", "lots", "total_steps must be an integer, got 'lots'"),
    ("network.hidden_sizes", "[64, 0.5]", "network.hidden_sizes must be a list of integers"),
    ("network.shared_torso", "maybe", "network.shared_torso must be true or false"),
])
def test_bad_overrides_name_the_problem(key, value, message):
    with pytest.raises(ConfigError) as error:
        resolve_config("CartPole-v1", "ppo", {key: value})
    assert message in str(error.value)


@pytest.mark.parametrize("overrides, message", [
    ({"total_steps": 0}, "total_steps must be a positive integer, got 0"),
    ({"num_envs": -2}, "num_envs must be a positive integer, got -2"),
    ({"eval_every": 4}, "eval_every=4 is smaller than one vector step (8 env steps with num_envs=8); use eval_every >= 8"),
    ({"ppo.minibatch_size": 100}, "ppo.minibatch_size=100 does not divide the rollout of 256 transitions "
                                  "(num_envs=8 x ppo.num_steps=32); use a divisor such as 64 or 128"),
    ({"ppo.gamma": 1.5}, "ppo.gamma must be in (0, 1], got 1.5"),
    ({"network.activation": "sigmoid"}, "network.activation must be one of tanh, relu, elu, gelu, silu"),
])
def test_invalid_values_are_refused(overrides, message):
    with pytest.raises(ConfigError) as error:
        resolve_config("CartPole-v1", "ppo", overrides)
    assert message in str(error.value)


def test_set_pairs_need_an_equals_sign():
    assert parse_set_pairs(["a=b", " c = d=e "]) == {"a": "b", "c": "d=e"}
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_set_pairs(["ppo.epochs"])


def test_config_round_trips_through_its_dict():
    config, _ = resolve_config("CartPole-v1", "a2c", {"network.hidden_sizes": [8], "run_name": "x"})
    assert config_from_dict(config.to_dict()) == config


def test_every_preset_resolves_to_a_valid_config():
    from champion.envs import presets

    found = {(env_id, algo) for env_id, algo, _ in presets.available()}
    expected_envs = {"CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1", "LunarLander-v3"}
    assert {(env_id, algo) for env_id in expected_envs for algo in ("ppo", "a2c")} | {
        ("LunarLanderContinuous-v3", "ppo")} <= found
    for env_id, algo in found:
        config, note = resolve_config(env_id, algo)
        assert note is None and config.env_id == env_id and config.algo == algo


def test_text_fields_keep_the_text_yaml_would_read_as_a_boolean():
    config, _ = resolve_config("CartPole-v1", "ppo", {"run_name": "off", "results_dir": "no"})
    assert (config.run_name, config.results_dir) == ("off", "no")


def test_env_kwargs_reach_gymnasium_make_in_training_evaluation_and_replay(tmp_path):
    """Counter pays 1 a step for ``length`` steps: with env_kwargs length 7 every evaluation and replay returns 7."""
    from champion.runners.replay import replay
    from champion.runners.training import train

    config, _ = resolve_config("champion-test/Counter-v0", "ppo", {
        "env_kwargs": "{length: 7}", "total_steps": 256, "eval_every": 128, "num_envs": 2, "ppo.num_steps": 64,
        "results_dir": str(tmp_path), "run_name": "kwargs", "media": False, "crown.episodes": 5})
    assert config.env_kwargs == {"length": 7}
    result = train(config, progress=False)
    assert result.best_mean_return == 7.0
    assert replay(result.run_dir, entry="best").result.returns == (7.0,) * 10
    assert replay(result.run_dir).result.returns == (7.0,) * 5  # the crown's held-out episodes
    from click.testing import CliRunner

    from champion.runners.cli.main import cli

    printed = CliRunner().invoke(cli, ["replay", str(result.run_dir), "--entry", "best"]).output.splitlines()
    assert "returns: 7 in each of the 10 episodes" in printed


def test_env_kwargs_must_be_a_mapping():
    with pytest.raises(ConfigError, match="env_kwargs must be a mapping"):
        resolve_config("CartPole-v1", "ppo", {"env_kwargs": "[1, 2]"})


@pytest.mark.parametrize("section, name", [(None, "total_steps"), (None, "checkpoint_keep"), (None, "histogram_every"),
                                           (None, "frame_stack"), ("ppo", "clip_range"), ("ppo", "epochs"),
                                           ("ppo", "learning_rate"), ("ppo", "gamma"), ("ppo", "minibatch_size")])
def test_true_for_a_number_built_in_python_is_refused_naming_the_setting(section, name):
    """A TrainConfig built in Python (the API) can hold True where a number goes; Python takes it for 1, so every
    one of these passed as 1 before (a YAML file or the command line checks types first)."""
    import dataclasses

    from champion.agents.config import validate

    config = TrainConfig()
    if section is None:
        config = dataclasses.replace(config, **{name: True})
    else:
        config = dataclasses.replace(config, ppo=dataclasses.replace(config.ppo, **{name: True}))
    with pytest.raises(ConfigError) as refused:
        validate(config)
    assert str(refused.value).startswith(f"{section + '.' if section else ''}{name} must be ")
    assert str(refused.value).endswith("got True")
