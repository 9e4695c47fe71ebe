"""Errors users can act on: each message says what to change."""
from __future__ import annotations

import contextlib


class ModelLoadError(RuntimeError):
    """A model could not be loaded (no network to the hub, a wrong name or folder)."""


@contextlib.contextmanager
def loading(kind: str, name: str, setting: str):
    """Turn the hub's and the loaders' OSError/ValueError into one actionable `ModelLoadError`."""
    try:
        yield
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Could not load the {kind} {name!r}: {exc}\nModels download from the Hugging Face hub on first "
            f"use: check the network (and HF_HUB_OFFLINE), or set {setting} to a local model folder.") from exc
