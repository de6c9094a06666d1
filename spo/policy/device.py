"""Which torch device `model.device` names: its own module, needing torch but not transformers, so that the
checks before a run (stages/runtime/preflight.py) stay light."""

import torch


def resolve_device(device: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
