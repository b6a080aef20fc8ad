"""Read model weights back out of a run's Ray Train + DeepSpeed checkpoints.

A run's checkpoints live at `runs/<name>/ray/checkpoint_<UTC time>/checkpoint/` (one folder per
report, every rank's DeepSpeed files). ZeRO stages 1 and 2 keep the whole module in
`mp_rank_00_model_states.pt`; stage 3 partitions it, so its fp32 weights are gathered from the
optimizer partitions with DeepSpeed's zero_to_fp32.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .config import ExperimentConfig
from .runs import RunRegistry
from .storage import Storage

CHECKPOINT_TAG = "checkpoint"  # DeepSpeed's tag (sub-folder) inside each Ray Train checkpoint
MODEL_STATES = "mp_rank_00_model_states.pt"
ZERO3_MODEL_STATES = "zero_pp_rank_0_mp_rank_00_model_states.pt"  # stage 3 names rank 0's module file so
STEP_FILE = "oss_step.json"  # {"step": N, "samples": M}, written beside the DeepSpeed files


class CheckpointError(FileNotFoundError):
    """A run has no (readable) checkpoint."""


def list_checkpoints(storage: Storage, run_name: str) -> list[tuple[str, int | None]]:
    """(key, step) of the run's complete checkpoints, oldest first; step None where it was not recorded."""
    run = RunRegistry(storage).open(run_name)
    base = run.key("ray") + "/"
    relative = [key[len(base):] for key in storage.list(run.key("ray"))]
    folders = sorted({key.split("/")[0] for key in relative if key.startswith("checkpoint_")})
    found = []
    for folder in folders:
        key = run.key("ray", folder, CHECKPOINT_TAG)
        if storage.exists(f"{key}/{MODEL_STATES}") or storage.exists(f"{key}/{ZERO3_MODEL_STATES}"):
            step = storage.read_json(f"{key}/{STEP_FILE}")["step"] if storage.exists(f"{key}/{STEP_FILE}") else None
            found.append((key, step))
    return found


def latest_checkpoint(storage: Storage, run_name: str, step: int | None = None) -> str:
    """Storage key (a folder) of the run's newest checkpoint (or the one saved at `step`):
    runs/<name>/ray/checkpoint_.../checkpoint."""
    found = list_checkpoints(storage, run_name)
    if not found:
        run = RunRegistry(storage).open(run_name)
        raise CheckpointError(f"run {run_name}: no checkpoint with {MODEL_STATES} under {storage.url(run.key('ray'))}")
    if step is None:
        return found[-1][0]
    for key, saved in found:
        if saved == step:
            return key
    steps = ", ".join(str(saved) for _, saved in found if saved is not None) or "none recorded"
    raise CheckpointError(f"run {run_name}: no checkpoint at step {step} (kept checkpoints are at steps: {steps})")


def checkpoint_step(storage: Storage, key: str) -> int | None:
    """The training step a checkpoint was saved at, where recorded."""
    return storage.read_json(f"{key}/{STEP_FILE}")["step"] if storage.exists(f"{key}/{STEP_FILE}") else None


def load_state_dict(storage: Storage, run_name: str, step: int | None = None) -> tuple[dict, ExperimentConfig, str]:
    """(fp32 state dict, the run's config, checkpoint key) of the run's newest checkpoint (or the one at `step`)."""
    record = RunRegistry(storage).open(run_name).record
    cfg = ExperimentConfig.model_validate(record["config"])
    key = latest_checkpoint(storage, run_name, step)
    with tempfile.TemporaryDirectory() as folder:
        if cfg.deepspeed.zero_stage == 3:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            local = Path(folder) / CHECKPOINT_TAG
            for full in storage.list(key):
                target = local / full[len(key) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(storage.read_bytes(full))
            state = get_fp32_state_dict_from_zero_checkpoint(folder, tag=CHECKPOINT_TAG)
        else:
            path = Path(folder) / MODEL_STATES
            path.write_bytes(storage.read_bytes(f"{key}/{MODEL_STATES}"))
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)["module"]
            except Exception as err:
                raise CheckpointError(f"{storage.url(key + '/' + MODEL_STATES)}: not a readable DeepSpeed "
                                      f"checkpoint: {err}") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, cfg, key


def load_model(storage: Storage, run_name: str, step: int | None = None) -> tuple[torch.nn.Module, ExperimentConfig, str]:
    """The run's model with its newest checkpoint's weights (or those at `step`), in eval mode:
    (model, config, checkpoint key)."""
    from .models import build_model

    state, cfg, key = load_state_dict(storage, run_name, step)
    model = build_model(cfg.model.name, **cfg.model.options)
    model.load_state_dict(state)
    return model.eval(), cfg, key
