"""Pick the device and the precision: cuda -> mps -> cpu; reduced precision only where the hardware runs it fast.

Precision names: fp32, bf16, fp16, and int8 (CPU only: fp32 model whose Linear layers are dynamically quantised
to int8 after loading). `auto` picks bf16 on GPUs and on CPUs whose native bf16 matmuls (AVX512_BF16 / AMX)
measure faster than fp32; elsewhere fp32, because emulated bf16 is slower than fp32 (see docs/benchmarks.md for
the measurements).
"""
from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass

from rag.errors import SettingsError

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


# bf16 is chosen over fp32 only when its matmuls measure at least this much faster: fp32 compute is exact against
# the fp32 reference, so a near-tie goes to it. Measured ratios sit far from it either way (docs/benchmarks.md):
# ~6x with AMX tiles, ~2.3x on Zen 4, 0.6x on an AMX Xeon whose tiles are not usable.
BF16_MIN_SPEEDUP = 1.2


@functools.lru_cache(maxsize=None)
def cpu_prefers_bf16() -> bool:
    """True when this CPU has native bf16 matmuls and they are faster than fp32 here. The flags alone are not
    enough: on an Intel Xeon whose AMX tiles the kernel does not grant (Linux before 5.16, or a hypervisor that
    hides them) the same avx512_bf16 flag leads oneDNN to its AVX-512 bf16 kernels, which ran at 0.6x its fp32
    GEMM, and a whole pass 1.5x slower than fp32 compute. Measured once per process (~50 ms)."""
    if not cpu_has_bf16():
        return False
    speedup = bf16_matmul_speedup()
    log.info("bf16 matmuls run %.1fx as fast as fp32 on this CPU: computing in %s", speedup,
             "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32")
    return speedup >= BF16_MIN_SPEEDUP


def bf16_matmul_speedup(rows: int = 512, width: int = 1024, repeat: int = 3) -> float:
    """fp32 time / bf16 time of one (rows x width) @ (width x 2*width) product on torch's CPU threads, best of
    `repeat` interleaved runs each after a warm-up (the first bf16 call creates oneDNN's kernels)."""
    import time

    import torch

    numbers = torch.Generator().manual_seed(0)  # its own: a caller's seeded random state stays as it was
    x, w = torch.randn(rows, width, generator=numbers), torch.randn(2 * width, width, generator=numbers)
    inputs = {dtype: (x.to(dtype), w.to(dtype)) for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(inputs, float("inf"))
    for attempt in range(repeat + 1):
        for dtype, (x, w) in inputs.items():
            start = time.perf_counter()
            torch.nn.functional.linear(x, w)
            if attempt:  # the first round is the warm-up
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


@dataclass(frozen=True)
class Precision:
    dtype: "object"  # torch.dtype the weights are loaded in
    int8: bool = False  # quantise Linear layers to int8 after loading (dynamic activation scales)
    bf16_weights: bool = False  # keep bf16 weights, compute in fp32 (see compute_in_fp32)

    @property
    def name(self) -> str:
        if self.bf16_weights:
            return "fp32 compute, bf16 weights"
        return "int8" if self.int8 else str(self.dtype).replace("torch.", "")


def checkpoint_dtype(model_name: str) -> str | None:
    """The dtype a checkpoint's weights are stored in ("bfloat16" for the Qwen3 releases), if it says."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_name)
    except Exception:  # noqa: BLE001 - unknown is fine: the caller then loads fp32
        return None
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(stored).replace("torch.", "") if stored is not None else None


def resolve_precision(dtype: str, device: str, stored: str | None = None) -> Precision:
    """`stored` is the checkpoint's own dtype: bf16 checkpoints keep bf16 weights on CPUs without native
    bf16 and compute in fp32 — the same numbers as loading them in fp32, at half the memory."""
    import torch

    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype == "bf16w":
        return Precision(torch.bfloat16, bf16_weights=True)
    if dtype == "int8":
        if device != "cpu":
            raise SettingsError("dtype='int8' is a CPU path (dynamic quantisation); use bf16/fp16 on GPUs.")
        return Precision(torch.float32, int8=True)
    if dtype != "auto":
        if dtype not in names:
            raise SettingsError(f"dtype={dtype!r} (RAG_DTYPE): use auto, fp32, bf16, fp16, bf16w (bf16 weights, fp32 compute) or int8 (CPU).")
        return Precision(names[dtype])
    if device.startswith("cuda"):
        return Precision(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if device == "cpu" and cpu_prefers_bf16():
        return Precision(torch.bfloat16)
    if device == "cpu" and stored == "bfloat16":
        return Precision(torch.bfloat16, bf16_weights=True)
    return Precision(torch.float32)


@dataclass(frozen=True)
class Runtime:
    """Where and how one model runs: device, precision, and the padded-token cap of a batch."""
    device: str
    precision: Precision
    batch_tokens: int


def runtime_for(model_name: str, device: str, dtype: str, *, loaded: bool, batch_tokens: int | None) -> Runtime:
    """The runtime of a model (`loaded`: an injected model, whose checkpoint dtype is not looked up).
    CPU batches are capped by padded tokens (rag/models/batching.py: twice as many where the CPU computes bf16
    natively); GPU batches fill up."""
    import torch

    from rag.models.batching import CPU_BATCH_TOKENS, CPU_BF16_BATCH_TOKENS

    resolved = resolve_device(device)
    stored = checkpoint_dtype(model_name) if not loaded and dtype == "auto" else None
    precision = resolve_precision(dtype, resolved, stored)
    native_bf16 = precision.dtype == torch.bfloat16 and not precision.bf16_weights and cpu_has_bf16()
    cpu_cap = CPU_BF16_BATCH_TOKENS if native_bf16 else CPU_BATCH_TOKENS
    cap = batch_tokens or (cpu_cap if resolved == "cpu" else 1 << 30)
    return Runtime(resolved, precision, cap)


def own_weights(model) -> int:
    """Copy the weights that still live in the checkpoint file's memory map into this process's own memory, in
    place; returns how many tensors were copied.

    transformers maps safetensors files and, when a tensor is loaded in its stored dtype (the releases' bf16
    weights kept as bf16, an fp32 checkpoint loaded in fp32), keeps it backed by the file's pages. Those are clean
    page cache: the kernel drops them when memory is wanted or they sit idle, and the next forward pass faults
    them back from disk. Measured here: 863 MB of the 0.6B reranker's weights were file pages, and the first
    rerank after the model sat idle took 18.4 s instead of 12.5 s. Anonymous memory of the same size stays put
    (a Space has no swap). Each copied tensor's file pages then leave this process's mapping (`_unmap_pages`), so
    the process never holds the whole file and the whole copy at once. Linux only (/proc/self/smaps); elsewhere
    nothing is copied.
    """
    import itertools

    mapped = _checkpoint_mappings()
    copied = 0
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        where = next((m for m in mapped if m.start <= tensor.data_ptr() < m.end), None)
        if tensor.device.type == "cpu" and where is not None:
            start, size = tensor.data_ptr(), tensor.numel() * tensor.element_size()
            tensor.data = tensor.data.clone()
            if where.unchanged:  # every page is the file's own: dropping them loses nothing
                _unmap_pages(start, size)
            copied += 1
    return copied


@dataclass(frozen=True)
class _Mapping:
    start: int
    end: int
    unchanged: bool  # no page was written (copied on write): each one can be read back from the file


def _checkpoint_mappings() -> list[_Mapping]:
    """This process's memory maps of safetensors files, from /proc/self/smaps (empty where there is none)."""
    try:
        lines = open("/proc/self/smaps", encoding="ascii", errors="ignore").read().splitlines()
    except OSError:
        return []
    found, current = [], None
    for line in lines:
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            current = None
            if len(fields) >= 6 and fields[5].endswith(".safetensors"):
                current = [int(x, 16) for x in fields[0].split("-")]
        elif current is not None and fields[:1] == ["Anonymous:"]:
            found.append(_Mapping(current[0], current[1], unchanged=int(fields[1]) == 0))
            current = None
    return found


def _unmap_pages(start: int, size: int) -> None:
    """Drop the pages of [start, start + size) of an unchanged file mapping from this process (madvise
    MADV_DONTNEED): they stay in the page cache, and a tensor still reading them (one sharing a boundary page) has
    them faulted back from the file. Only whole pages inside the range are touched."""
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    low, high = -(-start // page) * page, (start + size) // page * page
    if high > low:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(low), ctypes.c_size_t(high - low), 4)  # 4: MADV_DONTNEED (Linux)


def quantize_linears(module):
    """Replace every nn.Linear inside `module` by a dynamically quantised int8 one, in place.

    Weights are int8 per tensor, activations are quantised per batch at run time: about 2x the fp32 matmul
    throughput on AVX2/AVX-512 CPUs and a quarter of the weight memory. Embeddings and norms stay fp32.
    """
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # eager-mode quantisation warns that it moves to torchao; it still works
        warnings.simplefilter("ignore")
        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def compute_in_fp32(model):
    """Keep Linear and Embedding weights in bf16 but compute everything in fp32, in place.

    For a checkpoint stored in bf16 this gives exactly the numbers of an fp32 load (the fp32 weights would be
    the same bf16 values, widened) with half the weight memory. Each Linear widens its weight per call into a
    scratch buffer shared by the model's Linears of that shape: reusing it avoids allocating (and page-faulting)
    1.7 GB per forward pass at 0.6B, which measured 2.6x slower than the copy. The model must run one forward
    pass at a time (our embedder and reranker hold a lock). Norms, rotary tables and other small tensors go
    back to fp32.
    """
    import torch
    from torch import nn

    scratch: dict[tuple, torch.Tensor] = {}

    def widened(weight, dtype):
        if torch.is_grad_enabled():  # autograd keeps the weight for backward: never hand out a shared buffer
            return weight.to(dtype)
        key = (tuple(weight.shape), dtype, weight.device)
        buffer = scratch.get(key)
        if buffer is None:
            buffer = scratch[key] = torch.empty(weight.shape, dtype=dtype, device=weight.device)
        return buffer.copy_(weight)

    def linear_fp32(self, x):
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, widened(self.weight, x.dtype), bias)

    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.forward = linear_fp32.__get__(module)
        elif isinstance(module, nn.Embedding):
            module.register_forward_hook(lambda _m, _i, out: out.float())
        else:
            for name, tensor in list(module.named_parameters(recurse=False)) + \
                    list(module.named_buffers(recurse=False)):
                if tensor is not None and tensor.is_floating_point() and tensor.dtype != torch.float32:
                    tensor.data = tensor.data.float()
    return model
