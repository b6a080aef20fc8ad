from pathlib import Path

import pytest

from oss_cluster.config import ConfigError, ExperimentConfig, load_config, warmup_frames
from oss_cluster.data.schema import jitter_phase_count

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["pico", "standard", "heavy", "canvas", "smoke", "distill_smoke", "tune_smoke"])
def test_every_shipped_config_loads_and_trains_in_the_steady_state(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.tier in ("pico", "standard", "heavy")
    # Warm-up + window spans a Halton jitter cycle and fits in a sequence, at every ratio the config trains.
    for ratio in {cfg.data.ratio, *(cfg.tune.ratios if name.startswith("tune") else [])}:
        frames = warmup_frames(cfg.train, ratio, cfg.data.window) + cfg.data.window
        assert jitter_phase_count(ratio) <= frames <= cfg.data.frames_per_sequence, (ratio, frames)
    assert cfg.train.eval_frames >= 32


def test_warmup_frames_and_eval_frames():
    cfg = load_config(None, ["data.ratio=1.5", "data.window=2"])
    assert cfg.train.warmup_frames == "cycle" and warmup_frames(cfg.train, 1.5, 2) == 16
    assert warmup_frames(load_config(None, ["train.warmup_frames=3"]).train, 2.0, 4) == 3
    with pytest.raises(ConfigError, match="train.warmup_frames"):
        load_config(None, ["train.warmup_frames=often"])
    with pytest.raises(ConfigError, match="train.eval_frames"):
        load_config(None, ["train.eval_frames=8"])
    with pytest.raises(ConfigError, match="data.motion.*camera_speed"):
        load_config(None, ["data.motion.camera_speed=[8, 2]"])


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg.storage.root == "./oss-runs"
    assert cfg.deepspeed.zero_stage == 2 and cfg.deepspeed.torch_adam


def test_dotted_overrides_are_typed():
    cfg = load_config(CONFIGS / "pico.yaml", ["train.lr=5e-4", "data.out_size=[240, 320]", "deepspeed.zero_stage=3",
                                              "model.options.depth=4"])
    assert cfg.train.lr == pytest.approx(5e-4)
    assert cfg.data.out_size == (240, 320)
    assert cfg.deepspeed.zero_stage == 3
    assert cfg.model.options == {"depth": 4}


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "train.lrr" in str(err.value) and "unknown key" in str(err.value)


def test_wrong_type_and_impossible_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  steps: many\ndata:\n  ratio: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "train.steps" in message and "data.ratio" in message and str(path) in message


def test_unknown_override_key_is_named():
    with pytest.raises(ConfigError, match=r"--set train.learning_rate.*unknown key 'learning_rate'"):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["train.lr"])


def test_bad_override_value_names_the_override():
    with pytest.raises(ConfigError, match=r"--set deepspeed.zero_stage=4: deepspeed.zero_stage"):
        load_config(None, ["deepspeed.zero_stage=4"])


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="gt_samples must be a square"):
        load_config(None, ["data.gt_samples=20"])
    with pytest.raises(ConfigError, match="fusion_magnitude_min"):
        load_config(None, ["tune.fusion_magnitude_min=10", "tune.fusion_magnitude_max=1"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listing)
