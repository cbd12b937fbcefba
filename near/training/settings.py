"""Typed settings of the training core: every key of the ``cfg/`` tree, declared once.

One frozen dataclass per settings group: the envs (:class:`MazeConfig`, :class:`MotionEnvConfig`,
:class:`HumanoidEnvConfig`), PPO (:class:`PPOConfig`, rl-games' ``params.config``), AMP
(:class:`AMPConfig`), tracking (:class:`TrackingSettings`), NEAR's energy model
(:class:`NEARTraining`, :class:`NEARModel`, :class:`NEAROptim`) and reward
(:class:`NEARInference`), and the top level (:class:`Settings`). Each field carries its type,
its default and a one-line doc; a field whose name in ``cfg/`` differs (NEAR's camelCase env
keys) names it in ``key``. The defaults here are the only ones: hydra sees them as the
``*_base`` configs of the ``task`` and ``train`` groups (:func:`register_bases`), which the
files in ``cfg/`` extend with what differs per task.

:func:`load_settings` composes overrides and converts the result; an unknown key (with the
closest declared one) or a value of the wrong type raises :class:`SettingsError`.
:func:`stage_settings` is the canonical dict of what one stage (``ncsn`` or ``rl``) reads, so
two jobs whose stage reads the same settings are one job. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Iterator, Literal, Mapping, Union

from near.errors import ConfigError


class SettingsError(ConfigError):
    """An unknown, ill-typed or out-of-range setting; the message names the key."""


def setting(default: Any = MISSING, doc: str = "", *, key: str | None = None, factory: Any = MISSING) -> Any:
    """A declared setting: its default, a one-line doc, and its name in ``cfg/`` when that differs."""
    meta = {"doc": doc, "key": key}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------- envs
@dataclass(frozen=True)
class MazeDemos:
    """Scripted-planner demonstrations of the maze, generated on first use and cached."""

    num: int = setting(64, "demonstration episodes")
    seed: int = setting(0, "seed of the planner's start positions")
    cache_dir: str = setting("", "cache folder ('' : near's cache)")


@dataclass(frozen=True)
class MazeConfig:
    """``task.env`` of the maze (``cfg/task/maze*.yaml``; near/training/envs/maze.py)."""

    num_envs: int = setting(128, "parallel environments", key="numEnvs")
    num_obs_steps: int = setting(2, "consecutive states in one energy-model input (s, s')", key="numObsSteps")
    max_episode_length: int = setting(200, "steps before a time-out", key="maxEpisodeLength")
    substeps: int = setting(4, "Euler substeps per action")
    action_time: float = setting(0.3, "seconds per action", key="actionTime")
    kp: float = setting(10.0, "PD position gain")
    kv: float = setting(2.0, "PD velocity gain")
    max_speed: float = setting(400.0, "speed limit (window units per second)", key="maxSpeed")
    goal_reward: float = setting(10.0, "task reward on reaching the goal (ends the episode)", key="goalReward")
    step_reward: float = setting(0.0, "task reward of every other step", key="stepReward")
    compile: Union[bool, Literal["auto"]] = setting("auto", "torch.compile the physics (auto: on CUDA only)")
    demos: MazeDemos = setting(factory=MazeDemos, doc="expert demonstrations")

    def __post_init__(self) -> None:
        _at_least(self, "task.env", num_envs=1, num_obs_steps=1, max_episode_length=1, substeps=1)


@dataclass(frozen=True)
class MotionEnvConfig:
    """``task.env`` of the planar motion-imitation env (``cfg/task/motion*.yaml``)."""

    num_envs: int = setting(256, "parallel environments", key="numEnvs")
    motion_file: str = setting("circle", "reference motion: circle, figure8, stepturn or a YAML list")
    episode_length: int = setting(100, "control steps of 0.05 s per episode", key="episodeLength")
    state_init: Literal["Random", "Default"] = setting(
        "Random", "Random: reference state initialisation at a random phase; Default: phase 0", key="stateInit")
    early_termination: Literal["arena", "reference", "none"] = setting(
        "arena", "arena: leaving the 3 m box ends an episode; reference: also straying from the reference",
        key="earlyTermination")
    termination_distance: float = setting(0.5, "distance from the reference that ends an episode (reference)",
                                          key="terminationDistance")
    arena_size: float = setting(3.0, "half width of the arena (m)", key="arenaSize")
    phase_obs: bool = setting(False, "add sin/cos of the phase to the observation", key="phaseObs")
    target_obs: bool = setting(False, "add the offset of the next reference frame (tracking)", key="targetObs")
    num_obs_steps: int = setting(2, "consecutive states in one energy-model / discriminator input",
                                 key="numObsSteps")
    substeps: int = setting(4, "Euler substeps per control step")
    kp_root: float = setting(100.0, "PD gain of the root", key="kpRoot")
    kd_root: float = setting(20.0, "PD damping of the root", key="kdRoot")
    kp_end: float = setting(200.0, "PD gain of the end point", key="kpEnd")
    kd_end: float = setting(28.0, "PD damping of the end point", key="kdEnd")
    episode_metrics: bool = setting(True, "per-episode DTW / SPARC / jerk metrics in infos", key="episodeMetrics")
    paired_features: Literal["all", "root", "positions", "end"] = setting(
        "all", "features of each state in paired_obs / demo_transitions", key="pairedFeatures")
    demo_oversample: int = setting(8, "interpolated demonstration transitions per reference frame",
                                   key="demoOversample")

    def __post_init__(self) -> None:
        _at_least(self, "task.env", num_envs=1, episode_length=5, num_obs_steps=1, substeps=1, demo_oversample=1)
        _motion_named(self, PLANAR_MOTIONS, (".yaml", ".yml"))


@dataclass(frozen=True)
class HumanoidEnvConfig:
    """``task.env`` of the MuJoCo humanoid (``cfg/task/Humanoid*.yaml``; NEAR's camelCase keys)."""

    num_envs: int = setting(64, "parallel environments", key="numEnvs")
    motion_file: str = setting("walk", "walk|run|crane_pose (synthetic), a poselib .npy or NEAR's motion .yaml")
    episode_length: int = setting(300, "30 Hz control steps per episode", key="episodeLength")
    state_init: Literal["Random", "Start", "Default", "Hybrid"] = setting(
        "Random", "Random (reference state init), Start (time 0), Default (standing), Hybrid", key="stateInit")
    hybrid_init_prob: float = setting(0.5, "Hybrid: probability of a reference state init", key="hybridInitProb")
    num_obs_steps: int = setting(2, "consecutive observations in one energy-model / discriminator input",
                                 key="numObsSteps")
    local_root_obs: bool = setting(False, "heading-relative root rotation in the observation", key="localRootObs")
    termination_height: float = setting(0.3, "early termination: the height a body must be below",
                                        key="terminationHeight")
    enable_early_termination: bool = setting(
        True, "end an episode when a body other than contactBodies is in contact (floor or self) and one "
              "is below terminationHeight (NEAR's rule)", key="enableEarlyTermination")
    target_obs: bool = setting(False, "append the next reference observation (tracking)", key="targetObs")
    episode_metrics: bool = setting(True, "per-episode DTW pose error, SPARC, root jerk in infos",
                                    key="episodeMetrics")
    reward_types: Union[tuple[Literal["time", "dist"], ...], None] = setting(
        None, "task reward types; null: inferred from the motion name as NEAR does", key="rewardTypes")
    contact_bodies: tuple[str, ...] = setting(("right_foot", "left_foot"),
                                              "bodies allowed to be in contact", key="contactBodies")
    demo_oversample: int = setting(2, "demonstration phases per control step", key="demoOversample")
    #: the simulator, from ``task.sim.backend`` (not a ``task.env`` key)
    backend: str = field(default="mujoco", metadata={"internal": True})

    def __post_init__(self) -> None:
        _at_least(self, "task.env", num_envs=1, episode_length=5, num_obs_steps=1, demo_oversample=1)
        _motion_named(self, HUMANOID_MOTIONS, (".yaml", ".yml", ".npy"))


@dataclass(frozen=True)
class MazeTask:
    """``task`` of the maze tasks."""

    name: str = setting("mazeNEAR", "task name (names the default run dir)")
    env_type: Literal["maze"] = setting("maze", "registered environment")
    env: MazeConfig = setting(factory=MazeConfig, doc="environment settings")


@dataclass(frozen=True)
class MotionTask:
    """``task`` of the planar motion tasks."""

    name: str = setting("motionNEAR", "task name (names the default run dir)")
    env_type: Literal["motion"] = setting("motion", "registered environment")
    env: MotionEnvConfig = setting(factory=MotionEnvConfig, doc="environment settings")


@dataclass(frozen=True)
class HumanoidSim:
    """``task.sim`` of the humanoid."""

    backend: Literal["", "mujoco", "mujoco_warp", "isaacgym"] = setting(
        "", "mujoco (CPU), mujoco_warp (NVIDIA GPU), isaacgym (not supported); '': by device")


@dataclass(frozen=True)
class HumanoidTask:
    """``task`` of the humanoid tasks."""

    name: str = setting("HumanoidNEAR", "task name (names the default run dir)")
    env_type: Literal["Humanoid"] = setting("Humanoid", "registered environment")
    sim: HumanoidSim = setting(factory=HumanoidSim, doc="simulator")
    env: HumanoidEnvConfig = setting(factory=HumanoidEnvConfig, doc="environment settings")


TASKS: dict[str, type] = {"maze": MazeTask, "motion": MotionTask, "Humanoid": HumanoidTask}
TaskSettings = Union[MazeTask, MotionTask, HumanoidTask]


# ---------------------------------------------------------------------------------------- networks
@dataclass(frozen=True)
class Initializer:
    """An rl-games initializer (``name`` plus ``val`` for ``const_initializer``)."""

    name: str = setting("default", "rl-games initializer")
    val: Union[float, None] = setting(None, "constant of const_initializer")


@dataclass(frozen=True)
class ContinuousSpace:
    """rl-games' continuous action head."""

    mu_activation: str = setting("None", "activation of the action mean")
    sigma_activation: str = setting("None", "activation of the log std")
    mu_init: Initializer = setting(factory=Initializer, doc="initializer of the action mean layer")
    sigma_init: Initializer = setting(factory=lambda: Initializer("const_initializer", -2.0),
                                      doc="initializer of the log std (const_initializer val: its value)")
    fixed_sigma: bool = setting(True, "state-independent log std")


@dataclass(frozen=True)
class ActionSpace:
    """rl-games' ``network.space``."""

    continuous: ContinuousSpace = setting(factory=ContinuousSpace, doc="continuous actions")


@dataclass(frozen=True)
class Mlp:
    """Hidden layers of the actor and the critic."""

    units: tuple[int, ...] = setting((256, 128), "hidden layer sizes")
    activation: str = setting("relu", "activation")
    initializer: Initializer = setting(factory=Initializer, doc="weight initializer")


@dataclass(frozen=True)
class Network:
    """rl-games' ``params.network`` (actor-critic)."""

    name: str = setting("actor_critic", "rl-games network builder")
    separate: bool = setting(True, "separate actor and critic networks")
    space: ActionSpace = setting(factory=ActionSpace, doc="action head")
    mlp: Mlp = setting(factory=Mlp, doc="hidden layers")


@dataclass(frozen=True)
class Discriminator:
    """AMP's discriminator layers."""

    units: tuple[int, ...] = setting((256, 128), "hidden layer sizes")
    activation: Literal["relu", "elu", "tanh"] = setting("relu", "activation")


@dataclass(frozen=True)
class AMPNetwork(Network):
    """``params.network`` of AMP: the actor-critic plus the discriminator."""

    disc: Discriminator = setting(factory=Discriminator, doc="discriminator")


# ---------------------------------------------------------------------------------------- algorithms
@dataclass(frozen=True)
class RewardShaper:
    """rl-games' reward scaling."""

    scale_value: float = setting(1.0, "rewards are multiplied by this")


@dataclass(frozen=True)
class PPOConfig:
    """rl-games' ``params.config`` (continuous PPO), shared by every algorithm."""

    name: str = setting("", "experiment name in rl-games' logs ('': the task's or the experiment's)")
    max_epochs: float = setting(500, "PPO epochs (>= 100000: a frame budget, e.g. 60e6); max_iterations overrides")
    reward_shaper: RewardShaper = setting(factory=RewardShaper, doc="reward scaling")
    normalize_advantage: bool = setting(True, "standardise advantages per minibatch")
    gamma: float = setting(0.99, "discount")
    tau: float = setting(0.95, "GAE lambda")
    learning_rate: float = setting(3e-4, "Adam learning rate")
    lr_schedule: Literal["constant", "adaptive", "linear"] = setting("constant", "learning-rate schedule")
    kl_threshold: float = setting(0.008, "target KL of the adaptive schedule")
    save_frequency: int = setting(10, "epochs between checkpoints (nn/checkpoint.pth)")
    grad_norm: float = setting(0.5, "gradient clipping norm (with truncate_grads)")
    truncate_grads: bool = setting(False, "clip gradients to grad_norm")
    entropy_coef: float = setting(0.0, "entropy bonus")
    e_clip: float = setting(0.2, "PPO ratio clip")
    clip_value: bool = setting(False, "clip the value loss")
    horizon_length: int = setting(32, "steps per env per rollout")
    minibatch_size_per_env: int = setting(8, "minibatch = num_envs * this (unless minibatch_size is set)")
    minibatch_size: Union[int, None] = setting(None, "minibatch size (null: num_envs * minibatch_size_per_env)")
    mini_epochs: int = setting(4, "passes over each rollout")
    critic_coef: float = setting(1.0, "value loss weight")
    bounds_loss_coef: float = setting(0.0, "penalty on action means outside [-1, 1]")
    normalize_input: bool = setting(True, "running mean/std of observations")
    normalize_value: bool = setting(True, "running mean/std of values")
    value_bootstrap: bool = setting(True, "bootstrap the value at time-outs")
    mixed_precision: bool = setting(False, "autocast the updates")
    print_stats: bool = setting(True, "print throughput per epoch")
    torch_compile: bool = setting(False, "torch.compile the networks")

    def __post_init__(self) -> None:
        _at_least(self, "train.params.config", horizon_length=1, mini_epochs=1, minibatch_size_per_env=1,
                  save_frequency=0)


@dataclass(frozen=True)
class AMPConfig(PPOConfig):
    """``params.config`` of AMP: PPO plus the discriminator (NEAR's names)."""

    amp_replay_buffer_size: int = setting(100000, "policy transitions kept for the discriminator")
    amp_replay_keep_prob: float = setting(0.1, "probability that a policy transition enters the replay buffer "
                                                "once it has been filled")
    amp_replay_in_checkpoint: bool = setting(True, "save the replay buffer in checkpoints (false: a resumed run "
                                                   "refills it; for buffers too large to write every few epochs)")
    amp_batch_size: int = setting(1024, "rollout transitions per discriminator mini-epoch")
    amp_minibatch_size: int = setting(256, "rollout transitions per discriminator step (as many replayed ones "
                                           "join them)")
    disc_coef: float = setting(5.0, "discriminator loss weight")
    disc_logit_reg: float = setting(0.05, "weight of |w_last|^2")
    disc_grad_penalty: float = setting(5.0, "gradient penalty on demonstrations")
    disc_reward_scale: float = setting(2.0, "style reward scale")
    disc_weight_decay: float = setting(1e-4, "weight of sum |w|^2")
    disc_learning_rate: Union[float, None] = setting(None, "discriminator learning rate (null: learning_rate)")
    normalize_amp_input: bool = setting(True, "running mean/std of discriminator inputs")
    task_reward_w: float = setting(0.5, "weight of the task reward")
    disc_reward_w: float = setting(0.5, "weight of the style reward")


@dataclass(frozen=True)
class NEARTraining:
    """``near_config.training``: the energy model's training (stage ncsn)."""

    batch_size: int = setting(128, "transitions per step")
    n_iters: int = setting(3000, "training iterations")
    snapshot_freq: int = setting(1000, "iterations between checkpoints")
    eval_freq: int = setting(100, "iterations between demo/random energy evaluations")
    log_freq: int = setting(1, "iterations between loss summaries")
    anneal_power: float = setting(2.0, "power of sigma weighting the denoising loss")
    normalize_energynet_input: bool = setting(True, "running mean/std of the model's input")

    def __post_init__(self) -> None:
        _at_least(self, "train.params.config.near_config.training", batch_size=1, n_iters=0, snapshot_freq=1,
                  eval_freq=1, log_freq=1)


@dataclass(frozen=True)
class NEARModel:
    """``near_config.model``: the noise-conditioned energy model."""

    sigma_begin: float = setting(1.0, "largest noise scale")
    sigma_end: float = setting(0.01, "smallest noise scale")
    L: int = setting(10, "noise levels")
    encoder_hidden_layers: tuple[int, ...] = setting((32, 64), "encoder layer sizes")
    latent_space_dim: int = setting(128, "latent size")
    decoder_hidden_layers: tuple[int, ...] = setting((64, 32, 8), "decoder layer sizes")
    ema: bool = setting(True, "exponential moving average of the weights (used for the reward)")
    ema_rate: float = setting(0.999, "EMA decay")
    ncsnv2: bool = setting(True, "NCSNv2: geometric noise schedule, energy / sigma, unconditional network")
    feature_mask: Union[str, tuple[int, ...], tuple[bool, ...], None] = setting(
        None, "None, a named env mask, or indices of kept per-state features")

    def __post_init__(self) -> None:
        _at_least(self, "train.params.config.near_config.model", L=1, latent_space_dim=1)


@dataclass(frozen=True)
class NEAROptim:
    """``near_config.optim``: the energy model's optimiser."""

    optimizer: Literal["Adam", "RMSProp", "SGD"] = setting("Adam", "optimiser")
    lr: float = setting(1e-4, "learning rate")
    weight_decay: float = setting(0.0, "weight decay")
    beta1: float = setting(0.9, "Adam beta1")
    amsgrad: bool = setting(False, "Adam's AMSGrad")
    grad_clip_norm: float = setting(1.0, "gradient clipping norm (0: off)")
    param_init: str = setting("xavier_uniform", "weight initialisation")


@dataclass(frozen=True)
class NEARInference:
    """``near_config.inference``: the energy reward of stage rl (not read by stage ncsn)."""

    task_reward_w: float = setting(0.0, "weight of the task reward")
    energy_reward_w: float = setting(1.0, "weight of the energy reward")
    nonnegative_energy_reward: bool = setting(False, "map tanh((E - m) / 10) onto [0, 1] (False is NEAR's)")
    sigma_level: int = setting(-1, "noise level of the reward in 0..L-1, or -1 to anneal it")
    anneal_progress_threshold: float = setting(0.02, "relative energy rise that moves annealing to the next level")
    anneal_window: int = setting(3, "rollouts averaged by the annealing rule")
    eb_model_checkpoint: Union[str, dict[str, str]] = setting("", "energy model checkpoint, or {name: path}")
    running_mean_std_checkpoint: Union[str, dict[str, str], None] = setting(
        "", "its input normaliser, or {name: path} with the same keys")
    composition_weights: Union[dict[str, float], float, None] = setting(None, "weights {name: w} (default: equal)")


@dataclass(frozen=True)
class NEARSettings:
    """``params.config.near_config``: NEAR's energy model and reward."""

    training: NEARTraining = setting(factory=NEARTraining, doc="energy-model training")
    model: NEARModel = setting(factory=NEARModel, doc="energy model")
    optim: NEAROptim = setting(factory=NEAROptim, doc="energy-model optimiser")
    inference: NEARInference = setting(factory=NEARInference, doc="energy reward")


@dataclass(frozen=True)
class NEARConfig(PPOConfig):
    """``params.config`` of NEAR: PPO plus ``near_config``."""

    near_config: NEARSettings = setting(factory=NEARSettings, doc="energy model and reward")


@dataclass(frozen=True)
class TrackingSettings:
    """``params.config.tracking_config``: DeepMimic-style tracking reward."""

    task_reward_w: float = setting(0.0, "weight of the task reward")
    tracking_reward_w: float = setting(1.0, "weight of the tracking reward")
    combine: Literal["product", "sum"] = setting("product", "product of kernels or their weighted sum")
    scales: dict[str, float] = setting(factory=lambda: {"pose": 10.0, "velocity": 0.5, "end": 10.0},
                                       doc="kernel scale per feature group")
    weights: dict[str, float] = setting(factory=dict, doc="kernel weight per feature group (default 1)")


@dataclass(frozen=True)
class TrackConfig(PPOConfig):
    """``params.config`` of tracking: PPO plus ``tracking_config``."""

    tracking_config: TrackingSettings = setting(factory=TrackingSettings, doc="tracking reward")


@dataclass(frozen=True)
class Algo:
    """``params.algo``."""

    name: str = setting("ppo_continuous", "registered algorithm")


@dataclass(frozen=True)
class Model:
    """``params.model``."""

    name: str = setting("continuous_a2c_logstd", "rl-games model")


#: algorithm name -> (params.config class, params.network class)
ALGORITHMS: dict[str, tuple[type, type]] = {
    "ppo_continuous": (PPOConfig, Network),
    "near_continuous": (NEARConfig, Network),
    "amp_continuous": (AMPConfig, AMPNetwork),
    "track_continuous": (TrackConfig, Network),
}


@dataclass(frozen=True)
class TrainParams:
    """``train.params``: the algorithm, its network and its config."""

    algo: Algo = setting(factory=Algo, doc="algorithm")
    model: Model = setting(factory=Model, doc="rl-games model")
    network: Network = setting(factory=Network, doc="actor-critic network")
    config: PPOConfig = setting(factory=PPOConfig, doc="algorithm settings")


@dataclass(frozen=True)
class TrainSettings:
    """``train``."""

    params: TrainParams = setting(factory=TrainParams, doc="rl-games params")


# ---------------------------------------------------------------------------------------- top level
@dataclass(frozen=True)
class Settings:
    """The whole composed config (``cfg/config.yaml``) of one run."""

    experiment: str = setting("", "experiment name; names the default run dir runs/<experiment or task name>")
    run_dir: str = setting("", "every output of the run; the same run_dir resumes")
    num_envs: Union[int, None] = setting(None, "parallel environments (null: the task's numEnvs)")
    seed: int = setting(42, "seed; -1 picks a random one")
    torch_deterministic: bool = setting(False, "deterministic torch algorithms")
    torch_threads: int = setting(0, "torch intra-op threads (0: torch's default)")
    matmul_precision: Literal["highest", "high", "medium"] = setting(
        "high", "float32 matrix products on CUDA: highest (full fp32), high (TF32) or medium (bf16); none on CPU")
    max_iterations: Union[float, None] = setting(None, "PPO epochs, or a frame budget >= 100000 (null: the train config's)")
    device: str = setting("cpu", "cpu or cuda:N (environments, energy model and policy)")
    test: bool = setting(False, "play a policy (refused: near evaluates with near.training.evaluate)")
    checkpoint: str = setting("", "initial weights of stage rl (ignored once run_dir has its own checkpoint)")
    headless: bool = setting(True, "near's environments have no viewer: only True is accepted")
    task: TaskSettings = setting(factory=MazeTask, doc="task and environment")
    train: TrainSettings = setting(factory=TrainSettings, doc="algorithm")

    def __post_init__(self) -> None:
        if not self.headless:
            raise SettingsError("setting headless=False: near's environments have no viewer (only True is accepted)")
        if self.num_envs is not None and self.num_envs < 1:
            raise SettingsError(f"setting num_envs={self.num_envs}: must be at least 1")


# ---------------------------------------------------------------------------------------- conversion
# the built-in motions each env generates by name (near.training.motions.BUILTIN and
# near.training.envs.humanoid.synthetic.MOTIONS, which import torch; a test keeps them equal)
PLANAR_MOTIONS = ("circle", "figure8", "stepturn")
HUMANOID_MOTIONS = ("walk", "run", "crane_pose")


def _motion_named(env: Any, names: tuple[str, ...], suffixes: tuple[str, ...]) -> None:
    """SettingsError unless ``env.motion_file`` is a built-in motion or a file the env can read
    (by its suffix): anything else (a misspelt name, NEAR's name without ``.yaml``) could only
    stop the run when it loads its motions."""
    spec = str(env.motion_file).strip()
    if spec not in names and not spec.endswith(suffixes):
        raise SettingsError(f"setting task.env.motion_file={env.motion_file!r}: not a motion: name a built-in "
                            f"one ({', '.join(names)}) or a file ending in {', '.join(suffixes)}")


def _at_least(obj: Any, where: str, **minimums: int) -> None:
    for name, low in minimums.items():
        value = getattr(obj, name)
        if value < low:
            raise SettingsError(f"setting {where}.{_key_of(type(obj), name)}={value}: must be at least {low}")


def _fields(cls: type) -> dict[str, tuple[str, Any]]:
    """cfg key -> (attribute name, type) of a settings dataclass (cached)."""
    cached = _FIELDS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        cached = {}
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            cached[f.metadata.get("key") or f.name] = (f.name, hints[f.name])
        _FIELDS[cls] = cached
    return cached


_FIELDS: dict[type, dict[str, tuple[str, Any]]] = {}


def _key_of(cls: type, attr: str) -> str:
    for key, (name, _) in _fields(cls).items():
        if name == attr:
            return key
    return attr


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


class _Mismatch(Exception):
    pass


def _convert(value: Any, tp: Any, path: str, strict: bool = True) -> Any:
    """``value`` as type ``tp``; _Mismatch if it is not one; SettingsError for bad nested keys."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, path, strict)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:  # the same value of the same type (True is not 1)
        if not any(value == a and type(value) is type(a) for a in typing.get_args(tp)):
            raise _Mismatch
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        item = typing.get_args(tp)[0]
        return tuple(_convert_leaf(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        item = typing.get_args(tp)[1]
        return {str(k): _convert_leaf(v, item, f"{path}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise _Mismatch
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise _Mismatch
        return value
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise _Mismatch
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Mismatch
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return from_mapping(tp, value, path, strict)
    if tp is Any:
        return value
    raise TypeError(f"settings type {tp!r} of {path} is not supported")


def _convert_leaf(value: Any, tp: Any, path: str, strict: bool = True) -> Any:
    try:
        return _convert(value, tp, path, strict)
    except _Mismatch:
        raise SettingsError(f"ill-typed setting {path}={_show(value)}: expected {_type_name(tp)}") from None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def unknown_key_error(path: str, key: str, known: list[str]) -> SettingsError:
    """``unknown setting PATH.KEY; did you mean CLOSEST?`` (difflib's closest declared key)."""
    full = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f" (known here: {', '.join(sorted(known))})"
    return SettingsError(f"unknown setting {full}{hint}")


def from_mapping(cls: type, data: Mapping[str, Any], path: str = "", strict: bool = True) -> Any:
    """An instance of settings dataclass ``cls`` from ``data`` (its ``cfg/`` keys); every value must
    be of its declared type, and every key declared (``strict``) or is left out (not ``strict``)."""
    memo = _memo
    if memo is not None:
        hit = memo.get(id(data))
        if hit is not None and hit[0] is data and hit[1] is cls and hit[2] == strict:
            return hit[3]
    declared = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        entry = declared.get(key)
        where = f"{path}.{key}" if path else str(key)
        if entry is None:
            if not strict:
                continue
            raise unknown_key_error(path, str(key), list(declared))
        name, tp = entry
        kwargs[name] = _convert_leaf(value, tp, where, strict)
    result = cls(**kwargs)
    if memo is not None:
        memo[id(data)] = (data, cls, strict, result)
    return result


#: see :func:`reusing_conversions`
_memo: dict[int, tuple] | None = None


@contextlib.contextmanager
def reusing_conversions(memo: dict[int, tuple]) -> Iterator[None]:
    """Within: a mapping :func:`from_mapping` converted before (the very object, kept alive in
    ``memo``) is not converted again; trees that share their unchanged branches convert fast."""
    global _memo
    previous, _memo = _memo, memo
    try:
        yield
    finally:
        _memo = previous


def value_at(settings: Any, dotted: str) -> Any:
    """The setting at ``dotted`` (cfg keys) of typed settings, as plain containers; KeyError if
    there is none."""
    node = settings
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node):
            raise KeyError(dotted)
        entry = _fields(type(node)).get(part)
        if entry is None:
            raise KeyError(dotted)
        node = getattr(node, entry[0])
    return to_dict(node)





def settings_from_dict(data: Mapping[str, Any], strict: bool = True) -> Settings:
    """Typed :class:`Settings` of a composed, resolved config (plain containers); not ``strict``:
    keys nothing declares are left out (a run's ``config.yaml`` written by an older near)."""
    data = dict(data)
    task = data.pop("task", {}) or {}
    train = data.pop("train", {}) or {}
    if not isinstance(task, Mapping) or not isinstance(train, Mapping):
        raise SettingsError("settings task and train must be mappings")
    env_type = task.get("env_type")
    if env_type not in TASKS:
        if env_type is None:
            raise SettingsError("setting task.env_type is missing (one of " + ", ".join(TASKS) + ")")
        raise SettingsError(f"ill-typed setting task.env_type={_show(env_type)}: expected one of "
                            + ", ".join(TASKS))
    task_settings = from_mapping(TASKS[env_type], task, "task", strict)
    params = train.get("params", {}) or {}
    unknown = set(train) - {"params"}
    if unknown and strict:
        raise unknown_key_error("train", sorted(unknown)[0], ["params"])
    if not isinstance(params, Mapping):
        raise SettingsError("setting train.params must be a mapping")
    algo = from_mapping(Algo, params.get("algo", {}) or {}, "train.params.algo", strict)
    if algo.name not in ALGORITHMS:
        raise SettingsError(f"setting train.params.algo.name={algo.name!r}: expected one of {', '.join(ALGORITHMS)}")
    config_cls, network_cls = ALGORITHMS[algo.name]
    declared = {"algo", "model", "network", "config"}
    for key in params:
        if key not in declared and strict:
            raise unknown_key_error("train.params", str(key), sorted(declared))
    train_settings = TrainSettings(TrainParams(
        algo=algo,
        model=from_mapping(Model, params.get("model", {}) or {}, "train.params.model", strict),
        network=from_mapping(network_cls, params.get("network", {}) or {}, "train.params.network", strict),
        config=from_mapping(config_cls, params.get("config", {}) or {}, "train.params.config", strict),
    ))
    top = from_mapping(Settings, data, "", strict)
    return _apply_aliases(dataclasses.replace(top, task=task_settings, train=train_settings))


def _apply_aliases(s: Settings) -> Settings:
    """The top-level ``num_envs`` and ``max_iterations`` (NEAR's command-line names) written into the
    task's ``numEnvs`` and the config's ``max_epochs``, and rl-games' ``name`` filled in."""
    env, config = s.task.env, s.train.params.config
    if s.num_envs is not None and s.num_envs != env.num_envs:
        s = dataclasses.replace(s, task=dataclasses.replace(s.task, env=dataclasses.replace(env, num_envs=s.num_envs)))
    changes: dict[str, Any] = {}
    if s.max_iterations is not None:
        changes["max_epochs"] = float(s.max_iterations)
    if not config.name:
        changes["name"] = s.experiment or s.task.name
    if changes:
        params = dataclasses.replace(s.train.params, config=dataclasses.replace(config, **changes))
        s = dataclasses.replace(s, train=TrainSettings(params))
    return s


def to_dict(obj: Any, drop_none: bool = False) -> Any:
    """Settings as plain containers keyed by their ``cfg/`` names (tuples as lists)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for key, (name, _) in _fields(type(obj)).items():
            value = to_dict(getattr(obj, name), drop_none)
            if value is None and drop_none:
                continue
            out[key] = value
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v, drop_none) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, drop_none) for k, v in obj.items()}
    return obj


def defaults_of(cls: type) -> dict[str, Any]:
    """The declared defaults of a settings dataclass, keyed by ``cfg/`` names."""
    return to_dict(cls())


# ---------------------------------------------------------------------------------------- stages
#: top-level settings each stage reads (besides the task and the algorithm's settings)
_STAGE_TOP = {
    "ncsn": ("seed", "device", "torch_deterministic", "torch_threads"),
    "rl": ("seed", "device", "torch_deterministic", "torch_threads", "checkpoint"),
}


def stage_settings(settings: Settings, stage: str) -> dict[str, Any]:
    """Canonical JSON-able dict of exactly what stage ``ncsn`` or ``rl`` reads.

    ``ncsn`` trains the energy model on the task's demonstrations: the task (without ``numEnvs``:
    it builds one env) and ``near_config``'s training, model and optim, not ``inference`` or PPO.
    ``rl`` reads the task and every algorithm setting. Neither includes where outputs go
    (``run_dir``, ``experiment``) or ``headless``/``test``, which change nothing a run computes."""
    if stage not in _STAGE_TOP:
        raise SettingsError(f"stage {stage!r}: expected ncsn or rl")
    out: dict[str, Any] = {key: to_dict(getattr(settings, key)) for key in _STAGE_TOP[stage]}
    task = to_dict(settings.task)
    if stage == "ncsn":
        task["env"].pop(_key_of(type(settings.task.env), "num_envs"))
        config = settings.train.params.config
        if not isinstance(config, NEARConfig):
            raise SettingsError(f"task={settings.task.name}: its train config has no near_config "
                                "(an ncsn stage needs a NEAR task)")
        near = to_dict(config.near_config)
        near.pop("inference")
        out["near_config"] = near
    else:
        params = to_dict(settings.train.params)
        params["config"].pop("name")  # a label in rl-games' logs only
        out["train"] = {"params": params}
    out["task"] = task
    return out


#: the top-level names of settings written elsewhere (see :func:`_apply_aliases`)
_ALIASES = {"num_envs": "task.env.numEnvs", "max_iterations": "train.params.config.max_epochs"}
_NCSN_READS = ("task.", "train.params.config.near_config.training", "train.params.config.near_config.model",
               "train.params.config.near_config.optim")


#: settings that change nothing a run computes: where its outputs go, checks-only flags, log labels
NOT_RESULTS = ("run_dir", "experiment", "headless", "test", "train.params.config.name")


def setting_path(key: str) -> str:
    """The setting an override key writes: the top-level ``num_envs`` and ``max_iterations`` are
    written into ``task.env.numEnvs`` and ``train.params.config.max_epochs``."""
    return _ALIASES.get(key, key)


def stage_reads(stage: str, key: str) -> bool:
    """Whether what stage ``stage`` computes depends on setting ``key`` (dotted, as in an override):
    exactly the settings :func:`stage_settings` holds. ``rl`` reads every setting but
    :data:`NOT_RESULTS`; ``ncsn`` the seed, device and threads, and the task and energy-model
    settings (not ``numEnvs``, PPO or ``near_config.inference``)."""
    key = setting_path(key)
    if key in NOT_RESULTS:
        return False
    if stage != "ncsn":
        return True
    if key in _STAGE_TOP["ncsn"]:
        return True
    if key == "task.env.numEnvs":
        return False
    return any(key == p.rstrip(".") or key.startswith(p if p.endswith(".") else p + ".") for p in _NCSN_READS)


# ---------------------------------------------------------------------------------------- hydra
#: base configs of the ``train`` group (``defaults: [<name>, _self_]`` in cfg/train/*.yaml)
TRAIN_BASES = {"ppo_base": "ppo_continuous", "near_base": "near_continuous", "amp_base": "amp_continuous",
               "track_base": "track_continuous"}
#: base configs of the ``task`` group (``defaults: [<name>, _self_]`` in cfg/task/*.yaml)
TASK_BASES = {"maze_base": "maze", "motion_base": "motion", "humanoid_base": "Humanoid"}

_registered = False


def register_bases() -> None:
    """Put the declared defaults into hydra's ConfigStore as the ``*_base`` configs of the
    ``train`` and ``task`` groups, so ``cfg/`` holds only what differs per task."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, algo in TRAIN_BASES.items():
        config_cls, network_cls = ALGORITHMS[algo]
        params = {"algo": {"name": algo}, "model": defaults_of(Model), "network": defaults_of(network_cls),
                  "config": defaults_of(config_cls)}
        store.store(group="train", name=name, node={"params": params})
    for name, env_type in TASK_BASES.items():
        node = defaults_of(TASKS[env_type])
        node.pop("name")
        store.store(group="task", name=name, node=node)
    _registered = True


def permissive(overrides: list[str], groups: frozenset[str]) -> list[str]:
    """Plain ``key=value`` overrides of settings as ``++key=value``: hydra then accepts unknown keys
    and :func:`settings_from_dict` refuses them with the closest declared name."""
    out = []
    for o in overrides:
        if o[:1] in "+~" or "=" not in o:
            out.append(o)
            continue
        key = o.split("=", 1)[0]
        out.append(o if key in groups or key.startswith("hydra.") else "++" + o)
    return out


def load_settings(overrides: list[str], cfg_dir: str | None = None) -> Settings:
    """Compose ``cfg_dir`` (default: :func:`near.training.config.find_cfg_dir`) with ``overrides``
    and convert it to typed :class:`Settings`; SettingsError names an unknown or ill-typed key."""
    from omegaconf import OmegaConf

    from near.training.config import compose, config_groups, find_cfg_dir

    cfg_dir = cfg_dir or find_cfg_dir()
    cfg = compose(permissive(list(overrides), config_groups(cfg_dir)), cfg_dir)
    return settings_from_dict(OmegaConf.to_container(cfg, resolve=True))


def rl_games_params(settings: Settings) -> dict[str, Any]:
    """rl-games' ``params`` of a run: its PPO keys as rl-games reads them (unset optional keys left
    out, ``num_actors`` from the task); the typed :class:`TrainParams` under
    ``config['near_params']`` for near's algorithms."""
    params = settings.train.params
    ppo_keys = _fields(PPOConfig)
    config = {k: v for k, v in to_dict(params.config, drop_none=True).items() if k in ppo_keys}
    config["num_actors"] = settings.task.env.num_envs
    if config.get("lr_schedule") == "constant":
        # rl-games' default ("legacy") asks the scheduler after every minibatch, reading the KL back
        # from the GPU each time; a constant rate ignores it, so once per mini-epoch is the same run
        config["schedule_type"] = "standard"
    config["near_params"] = params
    network = {k: v for k, v in to_dict(params.network, drop_none=True).items() if k in _fields(Network)}
    return {"algo": to_dict(params.algo), "model": to_dict(params.model), "network": network, "config": config}


def read_run_settings(path: str) -> Settings:
    """The settings a run recorded (its ``config.yaml``); keys an older near wrote and nothing
    declares now are left out, and ``''`` where a number is declared counts as unset."""
    import yaml

    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as err:
        raise SettingsError(f"{path}: unreadable run settings ({err})") from err
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: run settings must be a mapping")
    for key in ("num_envs", "max_iterations"):
        if data.get(key) == "":
            data[key] = None
    try:
        return settings_from_dict(data, strict=False)
    except SettingsError as err:
        raise SettingsError(f"{path}: {err}") from None
