"""Net2Net (Chen et al. 2016): grow a trained model without changing what it computes.

- widen a (producer, consumer) pair: the producer's units are replicated; the consumer's incoming
  weights are divided by each unit's replication count (exact through any elementwise activation);
- deepen: insert residual blocks initialised to the identity (their last layer is zero);
- HAT's embedding is widened by an integer factor k: every embedding channel is duplicated k times
  (head by head), so LayerNorm statistics are unchanged, inputs are divided by k, and the attention
  scale is divided by k because q.k sums k copies of every term.

    bigger = expand(small_model, {"blocks": 4, "hidden": 64})
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .hat import HAB, HAT, OCAB, WindowAttention
from .student import ResBlock, Student


def _replication(old: int, new: int, generator: torch.Generator) -> torch.Tensor:
    """Index map new -> old: the first `old` units keep their place, the rest copy random units."""
    if new < old:
        raise ValueError(f"cannot widen from {old} to fewer units ({new})")
    extra = torch.randint(0, old, (new - old,), generator=generator)
    return torch.cat([torch.arange(old), extra])


@torch.no_grad()
def widen_pair(first: nn.Module, second: nn.Module, width: int, generator: torch.Generator | None = None):
    """Widen first's outputs (and second's inputs) to `width`; returns new (first, second) modules.

    Works for Linear or Conv2d layers (groups = 1) with an elementwise activation between them.
    """
    generator = generator or torch.Generator().manual_seed(0)
    old = first.weight.shape[0]
    mapping = _replication(old, width, generator)
    counts = torch.bincount(mapping, minlength=old).to(second.weight.dtype)
    new_first, new_second = copy.deepcopy(first), copy.deepcopy(second)
    new_first.weight = nn.Parameter(first.weight[mapping].clone())
    if first.bias is not None:
        new_first.bias = nn.Parameter(first.bias[mapping].clone())
    divided = second.weight / counts.view(1, -1, *([1] * (second.weight.dim() - 2)))
    new_second.weight = nn.Parameter(divided[:, mapping].clone())
    for layer, attribute in ((new_first, "out"), (new_second, "in")):
        if isinstance(layer, nn.Linear):
            setattr(layer, f"{attribute}_features", width)
        else:
            setattr(layer, f"{attribute}_channels", width)
    return new_first, new_second


def identity_resblock(channels: int, hidden: int, separable: bool) -> ResBlock:
    """A student residual block that returns its input unchanged (last conv zero)."""
    block = ResBlock(channels, hidden, separable)
    nn.init.zeros_(block.conv2.weight)
    nn.init.zeros_(block.conv2.bias)
    return block


def identity_hab(like: HAB, shift: int) -> HAB:
    """A HAB shaped like `like` that returns its input unchanged: attention projection, CAB output
    conv and MLP output are zero, so both residual branches add nothing."""
    dim = like.norm1.normalized_shape[0]
    block = HAB(dim, like.attn.heads, like.window, shift, dim // like.conv_block.body[0].out_channels,
                dim // like.conv_block.body[3].attention[1].out_channels, like.mlp.fc1.out_features / dim, like.conv_scale)
    block.attn.scale = like.attn.scale
    for layer in (block.attn.proj, block.conv_block.body[2], block.mlp.fc2):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    return block


@torch.no_grad()
def widen_student(model: Student, hidden: int, seed: int = 0) -> Student:
    """Widen every residual block's inner width to `hidden`."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    for block in model.blocks:
        block.conv1, block.conv2 = widen_pair(block.conv1, block.conv2, hidden, generator)
    model.config["hidden"] = hidden
    return model


@torch.no_grad()
def deepen_student(model: Student, blocks: int) -> Student:
    """Append identity residual blocks until there are `blocks`."""
    model = copy.deepcopy(model)
    channels, config = model.config["widths"][2], model.config
    while len(model.blocks) < blocks:
        model.blocks.append(identity_resblock(channels, config["hidden"], config["separable"]))
    config["blocks"] = len(model.blocks)
    return model


@torch.no_grad()
def widen_hat_mlp(model: HAT, mlp_ratio: float, seed: int = 0) -> HAT:
    """Widen every HAB and OCAB MLP to int(embed_dim * mlp_ratio) hidden units."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    width = int(model.config["embed_dim"] * mlp_ratio)
    for module in model.modules():
        if isinstance(module, (HAB, OCAB)):
            module.mlp.fc1, module.mlp.fc2 = widen_pair(module.mlp.fc1, module.mlp.fc2, width, generator)
    model.config["mlp_ratio"] = mlp_ratio
    return model


@torch.no_grad()
def deepen_hat(model: HAT, depth: int) -> HAT:
    """Append identity HABs to every group (before its OCAB) until each holds `depth`."""
    model = copy.deepcopy(model)
    window = model.config["window"]
    for group in model.layers:
        while len(group.blocks) < depth:
            shift = 0 if len(group.blocks) % 2 == 0 else window // 2
            group.blocks.append(identity_hab(group.blocks[0], shift))
    model.config["depth"] = depth
    return model


def _embedding_map(channels: int, factor: int, heads: int) -> torch.Tensor:
    """new -> old channel map duplicating each channel `factor` times inside its attention head."""
    head_dim = channels // heads
    new = torch.arange(channels * factor)
    head, within = new // (head_dim * factor), (new % (head_dim * factor)) % head_dim
    return head * head_dim + within


def _uniform_map(size: int, factor: int) -> torch.Tensor:
    return torch.arange(size * factor) % size


@torch.no_grad()
def widen_hat_embedding(model: HAT, factor: int) -> HAT:
    """embed_dim -> factor x embed_dim (and every width derived from it), preserving the function."""
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"embedding widening factor must be a whole number >= 1, got {factor}")
    config = dict(model.config)
    channels, heads = config["embed_dim"], config["heads"]
    config["embed_dim"] = channels * factor
    wider = HAT(**config)
    embed = _embedding_map(channels, factor, heads)
    old_state = model.state_dict()
    new_state = {}
    for name, new_value in wider.state_dict().items():
        value = old_state[name]
        for dim in range(value.dim()):
            old_size, new_size = value.shape[dim], new_value.shape[dim]
            if old_size == new_size:
                continue
            if new_size != old_size * factor:
                raise RuntimeError(f"{name}: dimension {dim} grows from {old_size} to {new_size}, not x{factor}")
            if old_size == channels:
                mapping = embed
            elif old_size == 3 * channels and name.endswith(("qkv.weight", "qkv.bias")) and dim == 0:
                mapping = torch.cat([part * channels + embed for part in range(3)])
            else:
                mapping = _uniform_map(old_size, factor)
            value = value.index_select(dim, mapping)
            if dim == 1 and value.dim() >= 2:  # an input dimension: every input now arrives `factor` times
                value = value / factor
        new_state[name] = value
    wider.load_state_dict(new_state)
    for old_module, new_module in zip(model.modules(), wider.modules()):
        if isinstance(new_module, (WindowAttention, OCAB)):
            new_module.scale = old_module.scale / factor
    return wider


COMPARABLE_HAT_KEYS = ("groups", "heads", "window", "compress", "squeeze", "overlap_ratio", "upsample_channels",
                       "temporal", "sub", "refine_hidden")
COMPARABLE_STUDENT_KEYS = ("widths", "separable", "temporal", "sub", "residual")


def expand(source: nn.Module, target_config: dict) -> nn.Module:
    """Grow `source` to `target_config` (a subset of its builder's keys) by Net2Net operations.

    HAT: embed_dim (a whole multiple), mlp_ratio (>=), depth (>=). Student: hidden (>=), blocks (>=).
    Every other key must equal the source's; anything else is an error naming the key.
    """
    config = {**source.config, **target_config}
    if isinstance(source, HAT):
        _check_same(source.config, config, COMPARABLE_HAT_KEYS)
        model = source
        if config["embed_dim"] != source.config["embed_dim"]:
            factor, remainder = divmod(config["embed_dim"], source.config["embed_dim"])
            if remainder:
                raise ValueError(f"embed_dim {config['embed_dim']} is not a whole multiple of {source.config['embed_dim']}")
            model = widen_hat_embedding(model, factor)
        if config["mlp_ratio"] != model.config["mlp_ratio"]:
            model = widen_hat_mlp(model, config["mlp_ratio"])
        if config["depth"] != model.config["depth"]:
            model = deepen_hat(model, config["depth"])
        return model
    if isinstance(source, Student):
        _check_same(source.config, config, COMPARABLE_STUDENT_KEYS)
        model = source
        if config["hidden"] != source.config["hidden"]:
            model = widen_student(model, config["hidden"])
        if config["blocks"] != model.config["blocks"]:
            model = deepen_student(model, config["blocks"])
        return model
    raise TypeError(f"Net2Net expansion supports HAT and Student models, not {type(source).__name__}")


def _check_same(source: dict, target: dict, keys) -> None:
    for key in keys:
        if tuple(_as_tuple(source[key])) != tuple(_as_tuple(target[key])):
            raise ValueError(f"Net2Net cannot change {key!r} ({source[key]!r} -> {target[key]!r})")


def _as_tuple(value):
    return value if isinstance(value, (list, tuple)) else (value,)
