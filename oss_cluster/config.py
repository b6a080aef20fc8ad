"""Typed experiment configuration: pydantic models loaded from one YAML per experiment.

    cfg = load_config("configs/pico.yaml", ["train.lr=2e-4", "data.ratio=1.5"])

Every section forbids unknown keys. Any problem (missing file, bad YAML, unknown key, wrong type,
impossible value) raises `ConfigError` naming the file (or the `--set` override) and the dotted key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

TierName = Literal["pico", "standard", "heavy"]


class ConfigError(ValueError):
    """A configuration problem, with the file or override and the dotted key in the message."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MotionConfig(Section):
    """How fast synthetic scenes move, in OUTPUT pixels per frame (speeds log-uniform between the bounds).

    camera_speed: screen speed of camera turns (the whole view slides; no parallax); strafe_speed:
    camera translation, as the screen speed of a surface at mid depth (nearer layers move faster, the
    background slower); object_speed: each object's own screen speed; static_fraction: share of
    scenes whose camera stands still (objects may still move); still_objects: share of objects that
    stand still on screen (like a character the camera follows).
    """

    camera_speed: tuple[PositiveFloat, PositiveFloat] = (0.75, 30.0)
    strafe_speed: tuple[PositiveFloat, PositiveFloat] = (0.25, 8.0)
    object_speed: tuple[PositiveFloat, PositiveFloat] = (0.3, 30.0)
    static_fraction: float = Field(0.15, ge=0.0, le=1.0)
    still_objects: float = Field(0.15, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> "MotionConfig":
        for name in ("camera_speed", "strafe_speed", "object_speed"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(low, high)}")
        return self


class DataConfig(Section):
    """Where frames come from and how they are cut into samples."""

    source: Literal["synth", "tartanair", "shards"] = "synth"
    shards: str | None = None  # storage URI of a built dataset, when source == "shards"
    root: str | None = None  # TartanAir trajectory folder, when source == "tartanair"
    ratio: float = Field(2.0, gt=1.0, le=4.0)  # output size / input size, per axis; a fraction such as 4/3 is exact
    out_size: tuple[PositiveInt, PositiveInt] = (480, 640)  # ground truth (H, W) in pixels

    @field_validator("ratio", mode="before")
    @classmethod
    def _fraction(cls, value):
        """'4/3' -> 1.333...: sizes are scaled by the exact fraction (tiers.scaled_size) either way."""
        if isinstance(value, str) and "/" in value:
            from fractions import Fraction

            try:
                return float(Fraction(value.strip()))
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"{value!r} is not a fraction such as 4/3") from None
        return value
    window: PositiveInt = 4  # K frames per temporal sample
    frames: PositiveInt = 240  # synthetic frames to generate in all
    frames_per_sequence: PositiveInt = 60  # synthetic frames per scene (one seed each)
    gt_samples: int = Field(16, ge=16)  # ground-truth samples per output pixel (a square number)
    objects: int = Field(5, ge=0, le=16)  # independently moving objects per synthetic scene
    motion_scale: PositiveFloat = 1.0  # synthetic scenes play this many times faster (more motion per frame)
    motion: MotionConfig = Field(default_factory=MotionConfig)  # synthetic speed distribution
    seed: int = 0
    windows_per_shard: PositiveInt = 16
    val_sequences: NonNegativeInt = 1  # held-out sequences for evaluation

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        side = round(self.gt_samples**0.5)
        if side * side != self.gt_samples:
            raise ValueError(f"gt_samples must be a square number (16, 25, ...), got {self.gt_samples}")
        if self.source == "shards" and not self.shards:
            raise ValueError("source 'shards' needs data.shards (a dataset URI)")
        if self.source == "tartanair" and not self.root:
            raise ValueError("source 'tartanair' needs data.root (a trajectory folder)")
        if self.window > self.frames_per_sequence:
            raise ValueError(f"window ({self.window}) is longer than frames_per_sequence ({self.frames_per_sequence})")
        return self


class ModelConfig(Section):
    name: str = "hat_heavy"  # a registered model name
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments for the model builder


class TrainConfig(Section):
    steps: PositiveInt = 1000
    batch_size: PositiveInt = 4  # per worker, per micro-step
    grad_accum: PositiveInt = 1
    lr: PositiveFloat = 2e-4
    weight_decay: NonNegativeFloat = 0.0
    warmup_steps: NonNegativeInt = 100
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: PositiveFloat | None = 1.0
    charbonnier_eps: PositiveFloat = 1e-3
    temporal_weight: NonNegativeFloat = 0.0  # weight of the temporal-stability loss term (0: off)
    # Weight and width (output pixels) of a Charbonnier term on Gaussian-blurred output and ground truth:
    # errors people see weigh more than pixel noise (measured: it lifted FLIP, and PSNR, of the Pico student).
    lowpass_weight: NonNegativeFloat = 1.0
    lowpass_sigma: PositiveFloat = 1.0
    # Frames run without gradient before each training window, so the model learns with an accumulated
    # history (truncated back-propagation through time). "cycle": enough for warm-up + window to span
    # one Halton jitter cycle (8 x ratio^2 frames).
    warmup_frames: NonNegativeInt | Literal["cycle"] = "cycle"
    crop: PositiveInt = 96  # ground-truth crop side in output pixels
    log_every: PositiveInt = 10
    eval_every: PositiveInt = 200
    eval_frames: int = Field(32, ge=32)  # frames per held-out sequence (steady state is judged from frame 8)
    checkpoint_every: PositiveInt = 200
    num_workers: PositiveInt = 2
    use_gpu: bool = False
    # Custom resources per worker, e.g. {trainer_heavy: 0.125}: pins workers to cluster.yaml's trainer node types.
    worker_resources: dict[str, PositiveFloat] = Field(default_factory=dict)
    max_failures: NonNegativeInt = 2
    # Where no node type the autoscaler can launch is known (a driver off the head), how long a worker
    # request no node can satisfy may wait before the job fails, naming the resource.
    resource_timeout_s: PositiveFloat = 900.0
    seed: int = 0


class DeepSpeedConfig(Section):
    zero_stage: Literal[1, 2, 3] = 2
    torch_adam: bool = True  # torch's AdamW: nothing is JIT-compiled on CPU
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU


class StorageConfig(Section):
    root: str = "./oss-runs"  # a local folder or s3://bucket/prefix (multi-node clusters: s3://, or shared=true)
    shared: bool = False  # a local root that every node mounts (NFS, EFS): allowed on a multi-node cluster
    endpoint_url: str | None = None  # S3 endpoint override; AWS_ENDPOINT_URL when unset
    region: str = "us-east-1"


class TuneConfig(Section):
    num_samples: PositiveInt = 8
    fusion_magnitude_min: PositiveFloat = 0.1
    fusion_magnitude_max: PositiveFloat = 100.0
    ratios: list[float] = Field(default_factory=lambda: [1.333, 1.5, 2.0], min_length=1)
    fx_weights: list[float] = Field(default_factory=lambda: [1.0], min_length=1)  # OSS-FX loss weights to try
    # A key of rank 0's evaluation reports: val_sr_fx (default: SR dB over bicubic + OSS-FX dB over the
    # depth-aware forward warp at alpha 0.5, so a sweep values both), val_psnr_over_bicubic (dB;
    # comparable across ratios), val_fx_over_depth_warp, val_psnr, val_ssim, val_flip, or any eval/<method>/<metric>.
    metric: str = "val_sr_fx"
    mode: Literal["max", "min"] = "max"
    max_steps: PositiveInt = 200  # training steps per trial
    grace_period: PositiveInt = 20  # ASHA's first rung, in steps; evaluations (train.eval_every) should reach it
    reduction_factor: float = Field(3.0, gt=1.0)  # ASHA keeps the top 1/reduction_factor at each rung
    max_concurrent_trials: PositiveInt | None = None  # None: all trials may run; resources decide

    @model_validator(mode="after")
    def _check(self) -> "TuneConfig":
        if self.fusion_magnitude_min >= self.fusion_magnitude_max:
            raise ValueError(
                f"fusion_magnitude_min ({self.fusion_magnitude_min}) must be below "
                f"fusion_magnitude_max ({self.fusion_magnitude_max})"
            )
        bad = [r for r in self.ratios if not 1.0 < r <= 4.0]
        if bad:
            raise ValueError(f"ratios must lie in (1, 4], got {bad}")
        if self.grace_period > self.max_steps:
            raise ValueError(f"grace_period ({self.grace_period}) exceeds max_steps ({self.max_steps})")
        return self


class DistillConfig(Section):
    """Student distillation: loss = Charbonnier(output, GT) + weight x Charbonnier(output, teacher output)."""

    teacher_run: str | None = None  # run (same storage root) whose newest checkpoint is the frozen teacher
    weight: NonNegativeFloat = 0.5  # lambda
    init_from_run: str | None = None  # a smaller student run to start from, expanded with Net2Net
    # Quantization-aware fine-tuning: the student's convolutions train on int8 weights and uint8 inputs, as the
    # INT8 export computes (oss_cluster/quantize.py); typically with init_from_run set to a trained student of the
    # same tier (Net2Net with nothing to grow is the identity)
    quantization_aware: bool = False


class ExperimentConfig(Section):
    """One experiment: what a YAML file in configs/ describes."""

    family: str = Field("hat", pattern=r"^[a-z][a-z0-9_]*$")  # run-name family
    version: str = Field("0.1", pattern=r"^\d+\.\d+$")  # project version major.minor
    tier: TierName = "heavy"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)


def warmup_frames(train: TrainConfig, ratio: float, window: int) -> int:
    """train.warmup_frames as a number of frames ("cycle": one Halton jitter cycle minus the window)."""
    if train.warmup_frames != "cycle":
        return int(train.warmup_frames)
    from .data.schema import jitter_phase_count

    return max(0, jitter_phase_count(ratio) - window)


def _open_field(model: type[BaseModel], name: str) -> bool:
    """True when a field takes free-form keys below it (a dict)."""
    annotation = model.model_fields[name].annotation
    return getattr(annotation, "__origin__", annotation) is dict


def _check_key(dotted: str) -> None:
    """Raise unless `dotted` names a field of ExperimentConfig (free-form dict fields accept any subkey)."""
    model: type[BaseModel] | None = ExperimentConfig
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth]) or "top level"
        if part not in model.model_fields:
            known = ", ".join(model.model_fields)
            raise ConfigError(f"--set {dotted}: unknown key '{part}' in {prefix} (known: {known})")
        if _open_field(model, part):
            return
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None and depth < len(parts) - 1:
            raise ConfigError(f"--set {dotted}: '{'.'.join(parts[: depth + 1])}' is a value, not a section")


def apply_override(raw: dict, override: str) -> str:
    """Apply one `key.sub=value` override to a raw config dict; returns the dotted key.

    The value is parsed as YAML, so `train.lr=2e-4` is a float and `data.out_size=[240,320]` a list.
    """
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. train.lr=2e-4")
    _check_key(key)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value {text!r} is not valid YAML: {err}") from None
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' holds a value, not a section")
        node = child
    node[parts[-1]] = value
    return key


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load an experiment from YAML (None: the embedded defaults) and apply dotted overrides."""
    source = str(path) if path is not None else "defaults"
    raw: dict = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{file}: no such config file")
        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{file}: not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{file}: top level must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded or {}
    overridden = {apply_override(raw, item): item for item in overrides}
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, source, overridden)) from None


def _describe(err: ValidationError, source: str, overridden: dict[str, str]) -> str:
    lines = []
    for problem in err.errors():
        dotted = ".".join(str(part) for part in problem["loc"])
        where = next((f"--set {item}" for key, item in overridden.items() if dotted.startswith(key)), source)
        message = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
        got = "" if problem["type"] in ("extra_forbidden", "missing") else f" (got {problem.get('input')!r})"
        lines.append(f"{where}: {dotted or '(top level)'}: {message}{got}")
    return "\n".join(lines)


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """Plain JSON-able dict of a config (for metrics.json and for saving a resolved YAML)."""
    return cfg.model_dump(mode="json")


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def with_absolute_storage(cfg: ExperimentConfig) -> ExperimentConfig:
    """A copy whose local storage root is absolute: Ray workers and Tune trials run in other folders."""
    if "://" in cfg.storage.root:
        return cfg
    resolved = cfg.model_copy(deep=True)
    resolved.storage.root = str(Path(cfg.storage.root).expanduser().resolve())
    return resolved
