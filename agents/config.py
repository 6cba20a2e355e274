"""Frozen, documented configuration for a training run.

Every field has one line of documentation under it (shown by ``champion presets --fields``).
A config is built from defaults, then a preset YAML, then command-line overrides, and is
validated as a whole by :func:`validate` before anything touches the disk.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from champion.errors import ChampionError
from champion.agents.spec import IMAGE_LAYOUTS, NATURE_CNN

ALGORITHMS = ("ppo", "a2c")
ACTIVATIONS = ("tanh", "relu", "elu", "gelu", "silu")
SCHEDULES = ("constant", "linear")
ENGINES = ("auto", "graph", "gymnasium", "ray")
OPTIMIZERS = ("adam", "rmsprop")


class ConfigError(ChampionError, ValueError):
    """A configuration value is wrong; the message says what and what would be right."""


SEED_LIMIT = 2**31
"""Seeds are below this: the training envs are reset with seed + env step + env index, evaluation and held-out
episodes with their seed + episode, and every such sum must stay below 2**32 (numpy's RandomState, many envs)."""
MAX_ENVS = 4096
"""The most training envs (and crown processes) a run may ask for: more than any machine runs, so a larger number
is a mistake (or a config made to exhaust the machine)."""
MAX_EPISODES = 100_000
"""The most episodes an evaluation or a crown plays (a best entry or crown records each one's seed)."""
MIN_EVAL_STALL_S = 3.0
"""The shortest ray.eval_stall_s: an evaluation actor is asked about its progress about once a second, and an
answer a second late is not a stall."""
MAX_CANDIDATES = 100
"""The most best entries a crown judges."""
RUN_NAME_PUNCTUATION = "._-+=,"
"""What a run name may hold besides letters and digits: nothing a shell or a file system reads specially."""
RUN_NAME_MAX_BYTES = 255 - len(".tmp-") - len("-") - 7
"""A run folder is assembled as ``.tmp-<name>-<pid>`` (a pid has at most 7 digits): a file name holds 255 bytes."""


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the actor-critic network."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    """Units of each hidden layer of the MLP torso(s)."""
    activation: str = "tanh"
    """Hidden-layer activation: tanh, relu, elu, gelu or silu."""
    shared_torso: bool = False
    """One torso for policy and value (True) or one each (False)."""
    value_hidden_sizes: tuple[int, ...] | None = None
    """Units of each hidden layer of the value torso when it should differ from the policy's (null: hidden_sizes; not with shared_torso)."""
    ortho_init: bool = True
    """Orthogonal initialisation of the dense layers (gains sqrt(2) hidden, 0.01 policy head, 1 value head); false: PyTorch's default for a linear layer, weights and biases uniform within 1/sqrt(fan_in), as SB3's ortho_init=False keeps it."""
    normalize_observations: bool = False
    """Normalise observations by running mean/std inside the model (saved with its weights)."""
    observation_clip: float = 10.0
    """Clip normalised observations to [-observation_clip, observation_clip]."""
    log_std_init: float = 0.0
    """Continuous actions: initial log standard deviation of the Gaussian policy."""
    image_layout: str = "auto"
    """How a uint8 Box observation is read: auto (an image if HxW, HxWxC or CxHxW with 1-4 channels), channels_last, channels_first, or none (never an image: flattened into the MLP)."""
    cnn_layers: tuple[tuple[int, int, int], ...] = NATURE_CNN
    """Image observations: [filters, kernel, stride] of each convolution (ReLU, no padding); the default is the Nature DQN CNN, which needs images of at least 36x36."""
    cnn_features: int = 512
    """Image observations: units of the dense ReLU layer after the convolutions."""
    torso: str | None = None
    """Your own Keras network as the torso, module:function (the function takes the feature width and returns a keras.Model from [batch, width] to [batch, features]); champion keeps its encoders, heads and distributions around it and acts with it in TensorFlow; hidden_sizes and activation are then unused (null: the MLP)."""
    value_torso: str | None = None
    """The value function's own torso, module:function, when it should differ from torso's (null: torso built again with weights of its own, or shared with shared_torso)."""


@dataclass(frozen=True)
class PPOConfig:
    """Proximal Policy Optimization hyperparameters."""

    num_steps: int = 2048
    """Vector steps per rollout; a rollout holds num_steps x num_envs transitions."""
    learning_rate: float = 3e-4
    """Adam learning rate at the start of training."""
    learning_rate_schedule: str = "constant"
    """constant, or linear decay to zero over schedule_steps (the run's first total_steps)."""
    clip_range: float = 0.2
    """PPO ratio clipping epsilon at the start of training."""
    clip_range_schedule: str = "constant"
    """constant, or linear decay to zero over schedule_steps (the run's first total_steps)."""
    value_clip_range: float | None = None
    """Clip the value update to this distance from the old value; null disables."""
    epochs: int = 10
    """Passes over each rollout."""
    minibatch_size: int = 64
    """Transitions per gradient step; must divide num_steps x num_envs."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda (1.0 gives Monte-Carlo-like returns, 0.0 one-step TD)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus."""
    value_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clipping threshold."""
    normalize_advantages: bool = True
    """Normalise advantages per minibatch."""
    adam_epsilon: float = 1e-5
    """Adam epsilon."""
    jit_compile: bool = True
    """Compile the update (all epochs x minibatches) with XLA: faster gradient steps on a CPU for a compile once per machine (cached). Never for image observations: XLA's CPU convolutions were about 100x slower than TensorFlow's."""


@dataclass(frozen=True)
class A2CConfig:
    """Advantage Actor-Critic hyperparameters (one gradient step per rollout)."""

    num_steps: int = 5
    """Vector steps per rollout (the n of n-step returns)."""
    learning_rate: float = 7e-4
    """Learning rate at the start of training."""
    learning_rate_schedule: str = "constant"
    """constant, or linear decay to zero over schedule_steps (the run's first total_steps)."""
    optimizer: str = "rmsprop"
    """rmsprop or adam."""
    rmsprop_decay: float = 0.99
    """RMSprop moving-average decay (rho)."""
    optimizer_epsilon: float = 1e-5
    """Optimizer epsilon, added to the root of the second moment (as in PyTorch and SB3)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE lambda; 1.0 gives classic n-step advantages."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus."""
    value_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clipping threshold."""
    normalize_advantages: bool = False
    """Normalise advantages over the rollout."""
    jit_compile: bool = False
    """Compile the update with XLA (measured no faster for one small gradient step per call, and slower to start)."""


@dataclass(frozen=True)
class RayConfig:
    """The Ray engine's workers and cluster (used when engine is ray)."""

    workers: int = 2
    """Rollout workers (Ray actors), each stepping its own vector env with the numpy policy."""
    envs_per_worker: int = 0
    """Envs in each worker's vector env; num_envs is workers x envs_per_worker (0: num_envs split evenly)."""
    address: str | None = None
    """Cluster to join: auto (RAY_ADDRESS, else the head started on this machine) or HOST:PORT; null starts a local Ray for the run and shuts it down at the end."""
    num_cpus: int | None = None
    """CPUs of the local Ray a run starts (null: all of the machine's)."""
    worker_cpus: float = 1.0
    """CPUs each rollout worker reserves on the cluster."""
    eval_workers: int = 1
    """Actors playing the evaluation episodes beside training (the episodes are split among them); 0: evaluate in the driver process."""
    fragment_timeout_s: float = 120.0
    """A worker whose fragment takes longer is restarted and its fragment collected again (several lost workers are restarted at once)."""
    eval_stall_s: float = 60.0
    """An evaluation actor that takes no env step for this long (at least 3 s; it is asked at each training iteration while it plays) is warned about, counted against ray.max_worker_restarts, replaced and plays its episodes again; an evaluation still stepping is never cut short (60 s: far past any env's step and a fresh actor's start, and short beside a training run)."""
    eval_timeout_s: float | None = None
    """A cap on one evaluation actor's episodes, from when they were sent: past it the run stops (null: no cap; hangs are found by ray.eval_stall_s)."""
    max_worker_restarts: int = 3
    """Restarts each rollout or evaluation worker may have (a fresh actor in place of one that died, hung or stalled) within ray.restart_window_s before the run stops with a checkpoint."""
    restart_window_s: float = 3600.0
    """Only a worker's restarts within this many seconds count against ray.max_worker_restarts (0: all of a session's)."""


@dataclass(frozen=True)
class CrownConfig:
    """Crowning the champion: the best candidates re-evaluated on held-out episodes after training."""

    at_end: bool = True
    """Crown at the end of a run (false: only on demand, with champion crown RUN_DIR)."""
    candidates: int = 3
    """The newest best entries re-evaluated with the final policy (the best store keeps at least this many)."""
    episodes: int = 100
    """Most held-out episodes per candidate, one per seed, disjoint from the evaluation seeds (the race stops sooner once the champion is clear)."""
    race: bool = True
    """Play in rounds of 10, 20, 40, ... episodes and stop a candidate once it is clearly worse than the leader (false: every candidate plays crown.episodes)."""
    tolerance: float = 0.0
    """Mean returns closer than this count as equally good, and the race stops one of the two sooner (0: only identical returns)."""
    time_share: float = 0.25
    """The crown's time limit as a share of the run's training time (0: no limit); it then crowns the leader of its last whole round."""
    min_seconds: float = 30.0
    """The time limit is never shorter than this (seconds)."""
    seconds: float | None = None
    """A fixed time limit in seconds instead of time_share (null: from time_share)."""
    seed: int | None = None
    """Held-out episode i uses seed crown.seed + i (null: eval_seed + 10,000,000)."""
    workers: int = 0
    """Processes playing the held-out episodes (1: this process; 0: this process, or one per CPU when the first candidate shows that pays off)."""

    def held_out_seed(self, eval_seed: int) -> int:
        """The first held-out seed."""
        return eval_seed + HELD_OUT_OFFSET if self.seed is None else self.seed


HELD_OUT_OFFSET = 10_000_000
"""Default distance of the held-out seeds from the evaluation seeds."""


@dataclass(frozen=True)
class StopConfig:
    """Early stopping: end the run before total_steps, as at its budget (final checkpoint, crown, summary)."""

    at_return: float | None = None
    """Stop at the first evaluation whose mean return is at or above this (null: never)."""
    after_evaluations_without_best: int | None = None
    """Stop when this many evaluations in a row brought no new best (null: never)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; saved as config.yaml in the run folder."""

    env_id: str = "CartPole-v1"
    """Gymnasium id, or module:EnvName-v0 for an environment registered by your module."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for gymnasium.make, e.g. {include_cfrc_ext_in_observation: false}; replay and export use them too."""
    algo: str = "ppo"
    """Learning algorithm: ppo or a2c."""
    seed: int = 0
    """Seeds the network, action sampling and the training environments (0 to 2,147,483,647)."""
    total_steps: int = 100_000
    """Environment steps to train for (summed over the vector envs)."""
    schedule_steps: int | None = None
    """Env steps over which linear schedules fall to 0 (unset: total_steps, recorded when the run starts); a resume keeps it, so --total-steps changes where a run stops, never what it learns."""
    num_envs: int = 8
    """Training environments stepped together."""
    eval_every: int = 10_000
    """Evaluate every this many environment steps."""
    eval_episodes: int = 10
    """Episodes per evaluation, one per fixed seed."""
    reward_scaling: bool = False
    """Divide training rewards by a running std of the discounted return (evaluation stays raw)."""
    eval_seed: int = 1_000_000
    """Evaluation episode i uses seed eval_seed + i, in every evaluation and replay."""
    eval_in_background: bool = True
    """Play evaluations on a worker thread while training goes on (same results); false: training waits for them."""
    results_dir: str = "results"
    """Run folders are created under results_dir/<env_id>/<algo>/."""
    run_name: str | None = None
    """Name of the run folder: letters, digits and . _ - + = , (not first: . or -), at most 242 bytes; default: time and seed."""
    checkpoint_every: int = 20_000
    """Write a resume checkpoint every this many environment steps (and on SIGINT/SIGTERM)."""
    checkpoint_keep: int = 3
    """Resume checkpoints kept on disk (older ones are deleted)."""
    max_nonfinite_updates: int = 3
    """Stop after this many consecutive updates with a non-finite loss or gradient."""
    log_every: int = 2_000
    """Write averaged training metrics to TensorBoard every this many environment steps."""
    vectorization: str = "auto"
    """Training envs: sync (every env in this process; auto means sync) or async (one process per env); both resume exactly."""
    media: bool = True
    """TensorBoard: an animated GIF of one evaluation episode at each new best, for envs that render rgb_array (throttled to a few percent of the wall time)."""
    histogram_every: int = 0
    """TensorBoard: histograms of the model's weights and last applied gradients every this many env steps (0: never)."""
    frame_stack: int = 1
    """Observations of the last this many steps, stacked (an image's frames become its channels); 1: no stacking."""
    engine: str = "auto"
    """How rollouts run: graph (env in TF ops, rollouts and updates fused in one compiled call; CartPole-v1), gymnasium (vector env stepped from Python), ray (rollout and evaluation workers on Ray, see ray.*), or auto (graph where possible, else gymnasium; never ray)."""
    network: NetworkConfig = field(default_factory=NetworkConfig)
    """Network shape."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO hyperparameters (used when algo is ppo)."""
    a2c: A2CConfig = field(default_factory=A2CConfig)
    """A2C hyperparameters (used when algo is a2c)."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray engine settings (used when engine is ray)."""
    crown: CrownConfig = field(default_factory=CrownConfig)
    """Held-out re-evaluation of the best candidates (champion crown)."""
    stop: StopConfig = field(default_factory=StopConfig)
    """Early stopping rules (a resume may change them)."""

    @property
    def algo_config(self) -> PPOConfig | A2CConfig:
        """The hyperparameters of the selected algorithm."""
        return self.ppo if self.algo == "ppo" else self.a2c

    @property
    def rollout_size(self) -> int:
        """Transitions in one rollout."""
        return self.algo_config.num_steps * self.num_envs

    @property
    def rounded_total_steps(self) -> int:
        """total_steps rounded up to whole rollouts: the steps a run really takes (every engine trains whole ones)."""
        return -(-self.total_steps // self.rollout_size) * self.rollout_size

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), suitable for YAML and JSON."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def linear_schedules(config: TrainConfig) -> list[str]:
    """The fields of the chosen algorithm whose schedule is linear (they fall to 0 at schedule_steps)."""
    hyper = config.algo_config
    names = ["learning_rate_schedule", "clip_range_schedule"] if config.algo == "ppo" else ["learning_rate_schedule"]
    return [f"{config.algo}.{name}" for name in names if getattr(hyper, name) == "linear"]


def _validate_schedule_steps(config: TrainConfig) -> None:
    """schedule_steps is unset or positive; a run with a linear schedule may not train past it."""
    steps = config.schedule_steps
    if steps is None:
        return
    _require(isinstance(steps, int) and steps > 0, f"schedule_steps must be a positive integer, got {steps!r}")
    linear = linear_schedules(config)
    if linear:
        _require(config.total_steps <= steps,
                 f"total_steps={config.total_steps:,} is past schedule_steps={steps:,}, where the linear schedule of "
                 f"{linear[0]} reaches 0, so the steps after it would learn nothing; a resumed run keeps its schedules, "
                 "so to train longer start a new run with the larger --total-steps")


def validate(config: TrainConfig) -> None:
    """Raise ConfigError naming the first invalid value and what would be valid."""
    _require(config.algo in ALGORITHMS, f"algo must be one of {', '.join(ALGORITHMS)}, got {config.algo!r}")
    _require(isinstance(config.env_kwargs, dict) and all(isinstance(key, str) for key in config.env_kwargs),
             f"env_kwargs must be a mapping of keyword names to values, e.g. {{frame_skip: 4}}, got {config.env_kwargs!r}")
    for name in ("total_steps", "num_envs", "eval_every", "eval_episodes", "log_every", "checkpoint_every",
                 "checkpoint_keep", "max_nonfinite_updates"):
        value = getattr(config, name)
        _require(_is_integer(value) and value > 0, f"{name} must be a positive integer, got {value!r}")
    for name, most in (("num_envs", MAX_ENVS), ("eval_episodes", MAX_EPISODES)):
        _require(getattr(config, name) <= most, f"{name} must be at most {most:,}, got {getattr(config, name):,}")
    for name in ("seed", "eval_seed"):
        _validate_seed(name, getattr(config, name))
    if config.run_name is not None:
        _validate_run_name(config.run_name)
    _require(config.vectorization in ("auto", "sync", "async"), f"vectorization must be auto, sync or async, got {config.vectorization!r}")
    _require(_is_integer(config.histogram_every) and config.histogram_every >= 0,
             f"histogram_every must be 0 (off) or a positive number of env steps, got {config.histogram_every!r}")
    _require(config.engine in ENGINES, f"engine must be one of {', '.join(ENGINES)}, got {config.engine!r}")
    _require(
        config.eval_every >= config.num_envs,
        f"eval_every={config.eval_every} is smaller than one vector step ({config.num_envs} env steps with "
        f"num_envs={config.num_envs}); use eval_every >= {config.num_envs}",
    )
    _require(_is_integer(config.frame_stack) and config.frame_stack > 0,
             f"frame_stack must be a positive integer (1: no stacking), got {config.frame_stack!r}")
    _validate_schedule_steps(config)
    _validate_network(config.network)
    _validate_crown(config)
    _validate_stop(config.stop)
    if config.engine == "ray":
        _require(config.network.torso is None,
                 f"engine=ray acts in numpy on TensorFlow-free workers, which cannot run network.torso "
                 f"{config.network.torso} (your own Keras network); use engine=gymnasium or auto")
        _validate_ray(config)
    prefix = config.algo
    hyper = config.algo_config
    _require(_is_integer(hyper.num_steps) and hyper.num_steps > 0, f"{prefix}.num_steps must be a positive integer, got {hyper.num_steps!r}")
    _positive_finite(f"{prefix}.learning_rate", hyper.learning_rate)
    _require(hyper.learning_rate_schedule in SCHEDULES, f"{prefix}.learning_rate_schedule must be one of {', '.join(SCHEDULES)}, got {hyper.learning_rate_schedule!r}")
    _require(_is_number(hyper.gamma) and 0.0 < hyper.gamma <= 1.0, f"{prefix}.gamma must be in (0, 1], got {hyper.gamma!r}")
    _require(_is_number(hyper.gae_lambda) and 0.0 <= hyper.gae_lambda <= 1.0, f"{prefix}.gae_lambda must be in [0, 1], got {hyper.gae_lambda!r}")
    _require(_is_number(hyper.entropy_coef) and hyper.entropy_coef >= 0.0, f"{prefix}.entropy_coef must be >= 0, got {hyper.entropy_coef!r}")
    _require(_is_number(hyper.value_coef) and hyper.value_coef >= 0.0, f"{prefix}.value_coef must be >= 0, got {hyper.value_coef!r}")
    _positive_finite(f"{prefix}.max_grad_norm", hyper.max_grad_norm)
    if isinstance(hyper, PPOConfig):
        _validate_ppo(hyper, config.num_envs)
    else:
        _require(hyper.optimizer in OPTIMIZERS, f"a2c.optimizer must be one of {', '.join(OPTIMIZERS)}, got {hyper.optimizer!r}")
        _require(_is_number(hyper.rmsprop_decay) and 0.0 < hyper.rmsprop_decay < 1.0, f"a2c.rmsprop_decay must be in (0, 1), got {hyper.rmsprop_decay!r}")
        _positive_finite("a2c.optimizer_epsilon", hyper.optimizer_epsilon)


TORSO_REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
"""A torso's name as a run records it: an importable module, a colon, the function's name in it."""


def _validate_network(network: NetworkConfig) -> None:
    for name in ("torso", "value_torso"):
        value = getattr(network, name)
        _require(value is None or (isinstance(value, str) and TORSO_REFERENCE.fullmatch(value) is not None),
                 f"network.{name} must be module:function naming a function that builds your Keras torso (e.g. "
                 f"my_package.nets:residual_torso), or null, got {value!r}")
    if network.value_torso is not None:
        _require(network.torso is not None, "network.value_torso needs network.torso (the policy's torso) as well")
        _require(not network.shared_torso, "network.value_torso needs two torsos; with network.shared_torso=true "
                 "leave it null")
    _require(
        all(_is_integer(size) and size > 0 for size in network.hidden_sizes),
        f"network.hidden_sizes must be a list of positive integers (empty: heads right on the encoders), got "
        f"{list(network.hidden_sizes)!r}",
    )
    if network.value_hidden_sizes is not None:
        _require(all(_is_integer(size) and size > 0 for size in network.value_hidden_sizes),
                 f"network.value_hidden_sizes must be a list of positive integers or null, got "
                 f"{list(network.value_hidden_sizes)!r}")
        _require(not network.shared_torso, "network.value_hidden_sizes needs two torsos; with network.shared_torso=true "
                 "leave it null")
    _require(network.image_layout in IMAGE_LAYOUTS,
             f"network.image_layout must be one of {', '.join(IMAGE_LAYOUTS)}, got {network.image_layout!r}")
    _require(len(network.cnn_layers) > 0 and all(len(layer) == 3 and all(_is_integer(size) and size > 0 for size in layer)
                                                 for layer in network.cnn_layers),
             f"network.cnn_layers must be a non-empty list of [filters, kernel, stride] positive integers, got "
             f"{[list(layer) for layer in network.cnn_layers]!r}")
    _require(_is_integer(network.cnn_features) and network.cnn_features > 0,
             f"network.cnn_features must be a positive integer, got {network.cnn_features!r}")
    _require(network.activation in ACTIVATIONS, f"network.activation must be one of {', '.join(ACTIVATIONS)}, got {network.activation!r}")
    _positive_finite("network.observation_clip", network.observation_clip)
    _require(math.isfinite(network.log_std_init), f"network.log_std_init must be a finite number, got {network.log_std_init!r}")


def _validate_crown(config: TrainConfig) -> None:
    crown = config.crown
    for name, most in (("candidates", MAX_CANDIDATES), ("episodes", MAX_EPISODES)):
        value = getattr(crown, name)
        _require(_is_integer(value) and 0 < value <= most,
                 f"crown.{name} must be a positive integer up to {most:,}, got {value!r}")
    for name, below in (("tolerance", "0: only identical returns"), ("time_share", "0: no time limit"),
                        ("min_seconds", "seconds")):
        value = getattr(crown, name)
        _require(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf,
                 f"crown.{name} must be a number of 0 or more ({below}), got {value!r}")
    _require(crown.seconds is None or (isinstance(crown.seconds, (int, float)) and not isinstance(crown.seconds, bool)
                                       and 0 < crown.seconds < math.inf),
             f"crown.seconds must be a positive number of seconds or null (the limit from time_share), got {crown.seconds!r}")
    _require(isinstance(crown.race, bool), f"crown.race must be true or false, got {crown.race!r}")
    _require(_is_integer(crown.workers) and 0 <= crown.workers <= MAX_ENVS,
             f"crown.workers must be 0 (one per CPU) or a positive integer up to {MAX_ENVS:,}, got {crown.workers!r}")
    if crown.seed is not None:
        _validate_seed("crown.seed", crown.seed, " or null")
    first = crown.held_out_seed(config.eval_seed)
    overlaps = first < config.eval_seed + config.eval_episodes and config.eval_seed < first + crown.episodes
    _require(not overlaps, f"the held-out seeds {first}..{first + crown.episodes - 1} overlap the evaluation seeds "
             f"{config.eval_seed}..{config.eval_seed + config.eval_episodes - 1}; choose crown.seed >= "
             f"{config.eval_seed + config.eval_episodes} (or null)")


def _validate_ray(config: TrainConfig) -> None:
    ray = config.ray
    for name, least in (("workers", 1), ("envs_per_worker", 0), ("eval_workers", 0), ("max_worker_restarts", 0)):
        value = getattr(ray, name)
        _require(_is_integer(value) and value >= least, f"ray.{name} must be an integer >= {least}, got {value!r}")
    _require(ray.num_cpus is None or (_is_integer(ray.num_cpus) and ray.num_cpus > 0),
             f"ray.num_cpus must be a positive integer or null, got {ray.num_cpus!r}")
    _require(_is_number(ray.worker_cpus) and 0 <= ray.worker_cpus < math.inf,
             f"ray.worker_cpus must be a number of CPUs >= 0, got {ray.worker_cpus!r}")
    _require(_is_number(ray.fragment_timeout_s) and 0 < ray.fragment_timeout_s < math.inf,
             f"ray.fragment_timeout_s must be a positive number of seconds, got {ray.fragment_timeout_s!r}")
    _require(_is_number(ray.eval_stall_s) and MIN_EVAL_STALL_S <= ray.eval_stall_s < math.inf,
             f"ray.eval_stall_s must be a number of seconds >= {MIN_EVAL_STALL_S:g} (an actor is asked about its "
             f"progress about once a second), got {ray.eval_stall_s!r}")
    _require(ray.eval_timeout_s is None or (_is_number(ray.eval_timeout_s) and 0 < ray.eval_timeout_s < math.inf),
             f"ray.eval_timeout_s must be a positive number of seconds or null (no cap), got {ray.eval_timeout_s!r}")
    _require(_is_number(ray.restart_window_s) and 0 <= ray.restart_window_s < math.inf,
             f"ray.restart_window_s must be a number of seconds >= 0 (0: the whole session), got {ray.restart_window_s!r}")
    _require(config.num_envs % ray.workers == 0,
             f"num_envs={config.num_envs} does not split evenly over ray.workers={ray.workers}; use num_envs="
             f"{-(-config.num_envs // ray.workers) * ray.workers} or set ray.envs_per_worker")
    _require(not ray.envs_per_worker or ray.envs_per_worker * ray.workers == config.num_envs,
             f"ray.envs_per_worker={ray.envs_per_worker} x ray.workers={ray.workers} is not num_envs={config.num_envs}; "
             "give two of the three")
    _require(config.vectorization != "async", "vectorization=async is for the gymnasium engine; each Ray worker steps "
             "its envs in its own process already")


def _validate_ppo(hyper: PPOConfig, num_envs: int) -> None:
    _require(_is_integer(hyper.epochs) and hyper.epochs > 0, f"ppo.epochs must be a positive integer, got {hyper.epochs!r}")
    _positive_finite("ppo.clip_range", hyper.clip_range)
    _require(hyper.clip_range_schedule in SCHEDULES, f"ppo.clip_range_schedule must be one of {', '.join(SCHEDULES)}, got {hyper.clip_range_schedule!r}")
    if hyper.value_clip_range is not None:
        _positive_finite("ppo.value_clip_range", hyper.value_clip_range)
    _positive_finite("ppo.adam_epsilon", hyper.adam_epsilon)
    rollout = hyper.num_steps * num_envs
    _require(_is_integer(hyper.minibatch_size) and hyper.minibatch_size > 0, f"ppo.minibatch_size must be a positive integer, got {hyper.minibatch_size!r}")
    if rollout % hyper.minibatch_size != 0:
        divisors = [size for size in range(1, rollout + 1) if rollout % size == 0]
        near = sorted(divisors, key=lambda size: abs(size - hyper.minibatch_size))[:2]
        raise ConfigError(
            f"ppo.minibatch_size={hyper.minibatch_size} does not divide the rollout of {rollout} transitions "
            f"(num_envs={num_envs} x ppo.num_steps={hyper.num_steps}); use a divisor such as "
            f"{' or '.join(str(size) for size in sorted(near))}"
        )


def _validate_stop(stop: StopConfig) -> None:
    at_return = stop.at_return
    _require(at_return is None or (isinstance(at_return, (int, float)) and not isinstance(at_return, bool)
                                   and math.isfinite(at_return)),
             f"stop.at_return must be a finite number (a mean return) or null, got {at_return!r}")
    count = stop.after_evaluations_without_best
    _require(count is None or (_is_integer(count) and not isinstance(count, bool) and 1 <= count <= MAX_EPISODES),
             f"stop.after_evaluations_without_best must be a positive integer up to {MAX_EPISODES:,} or null, "
             f"got {count!r}")


def _validate_seed(name: str, value: Any, alternative: str = "") -> None:
    """A seed every consumer takes, with the offsets added to it (``SEED_LIMIT``)."""
    _require(_is_integer(value) and not isinstance(value, bool) and 0 <= value < SEED_LIMIT,
             f"{name} must be an integer from 0 to {SEED_LIMIT - 1:,}{alternative}, got {value!r}")


def _validate_run_name(name: Any) -> None:
    """A run name is one plain folder name: no path, no hidden or temporary name, nothing unprintable, and short
    enough for its temporary name (``RUN_NAME_MAX_BYTES``). Checked before any folder exists."""
    allowed = (f"a run name holds letters, digits and {' '.join(RUN_NAME_PUNCTUATION)} only (not starting with . or -), "
               f"at most {RUN_NAME_MAX_BYTES} bytes in UTF-8")
    _require(isinstance(name, str) and name != "", f"run_name must be a non-empty text, got {name!r}; {allowed}")
    shown = repr(name) if len(name) <= 60 else repr(name[:60]) + "..."  # repr: an unprintable character as an escape
    wrong = next((char for char in name if not _run_name_character(char)), None)
    _require(wrong is None, f"run_name {shown} holds {wrong!r}; {allowed}")
    _require(name[0] not in ".-", f"run_name {shown} starts with {name[0]!r}; {allowed}")
    size = len(name.encode("utf-8"))
    _require(size <= RUN_NAME_MAX_BYTES, f"run_name is {size} bytes long in UTF-8; {allowed}")


def _run_name_character(char: str) -> bool:
    """A letter or digit of any script (with its combining marks), or one of ``RUN_NAME_PUNCTUATION``."""
    return char in RUN_NAME_PUNCTUATION or char.isalnum() or unicodedata.category(char) in ("Mn", "Mc")


def _is_integer(value: Any) -> bool:
    """An int, not a bool (YAML's true is an int to Python, and would pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or float, not a bool, not NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _positive_finite(name: str, value: float) -> None:
    _require(
        _is_number(value) and math.isfinite(value) and value > 0,
        f"{name} must be a positive finite number, got {value!r}",
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
