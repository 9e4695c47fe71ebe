"""Pick the device and dtype: cuda -> mps -> cpu; bf16 only where the hardware computes it fast."""
from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512_BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = open("/proc/cpuinfo", encoding="ascii", errors="ignore").read()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_dtype(dtype: str, device: str):
    import torch

    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype != "auto":
        if dtype not in names:
            raise ValueError(f"dtype={dtype!r}: use auto, fp32, bf16 or fp16.")
        return names[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32
