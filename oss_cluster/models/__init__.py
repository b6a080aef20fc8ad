"""Model registry: configs name models, `build_model(name, **options)` builds them.

    model = build_model("hat_tiny", temporal=True)

Every registered model is a `TemporalSR` (oss_cluster/models/temporal.py).
"""

from __future__ import annotations

from typing import Callable

_REGISTRY: dict[str, Callable] = {}


def register_model(name: str, builder: Callable) -> Callable:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = builder
    return builder


def _load_all() -> None:
    # Importing the model modules registers their builders.
    from . import canvas, hat, student  # noqa: F401


def list_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_model(name: str, **options):
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as err:
        raise TypeError(f"model {name!r}: bad options {options}: {err}") from None


def model_options(name: str) -> list[str]:
    """Keyword options the registered builder of `name` accepts."""
    import inspect

    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    parameters = inspect.signature(_REGISTRY[name]).parameters.values()
    return [p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
