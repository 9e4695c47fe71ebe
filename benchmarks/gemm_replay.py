"""The matrix products of a call alone: a bound on how fast the call could run with everything else free.

`record_products(fn, weights)` runs fn once and records every matrix product it makes (aten linear, mm, addmm,
bmm, baddbmm: the Linears, whatever path the model takes); `ProductReplay.run()` then makes the same products again,
back to back, with nothing between them: same shapes, dtypes and strides, the model's own weights, and each
activation a random tensor of the recorded layout. What a pass spends above that replay goes to everything
that is not a product (norms, rotary, attention, SwiGLU, copies, Python); what the replay spends above the
floor is the GEMM library's rate on these shapes, one after another, against its peak on the best shape alone.

The replay is optimistic: activations of one layout are one tensor, reused by every call that reads that layout
(a pass reads each freshly written), so they are as warm in the caches as they can be. If the replay alone is
above a bar, no fusion of the other work can meet the bar with this GEMM library on this CPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Layout:
    """An activation's shape, strides, dtype and device: the replay makes one random tensor per layout."""
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: object
    device: str


@dataclass
class ProductReplay:
    """The recorded products, in order; `flops` counts their multiply-adds x 2."""
    calls: list = field(default_factory=list)  # (aten op, args: kept weights or Layouts, kwargs)
    flops: float = 0.0
    _inputs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.calls)

    def run(self) -> None:
        """Every recorded product once, in order, waiting for a GPU to finish them (the inputs are made on the first
        run; time the later ones)."""
        import torch

        calls = [(op, [self._input(a) if isinstance(a, Layout) else a for a in args], kwargs)
                 for op, args, kwargs in self.calls]
        with torch.inference_mode():
            for op, args, kwargs in calls:
                op(*args, **kwargs)
        if any(layout.device.startswith("cuda") for layout in self._inputs):
            torch.cuda.synchronize()

    def _input(self, layout: Layout):
        import torch

        tensor = self._inputs.get(layout)
        if tensor is None:  # standard normal, like a normed activation
            tensor = torch.empty_strided(layout.shape, layout.stride, dtype=layout.dtype,
                                         device=layout.device).normal_()
            self._inputs[layout] = tensor
        return tensor


def record_products(fn, weights) -> ProductReplay:
    """Run fn() once and record its matrix products. A tensor argument sharing storage with one of `weights`
    (the model's parameters) is kept as it is; any other becomes its Layout."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    products = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default, aten.linear.default}
    storages = {w.untyped_storage().data_ptr() for w in weights}
    replay = ProductReplay()

    def argument(a):
        if not isinstance(a, torch.Tensor) or a.untyped_storage().data_ptr() in storages:
            return a
        return Layout(tuple(a.shape), tuple(a.stride()), a.dtype, str(a.device))

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in products:
                replay.calls.append((func, [argument(x) for x in args], dict(kwargs or {})))
                replay.flops += _flops(func, args)
            return func(*args, **(kwargs or {}))

    with Recorder():
        fn()
    return replay


def _flops(func, args) -> float:
    """2 x the multiply-adds: linear(x, weight[out, in], bias) and (add)mm / (b)bmm / baddbmm(..., a, b)."""
    import torch

    if func is torch.ops.aten.linear.default:
        return 2 * args[0].numel() * args[1].shape[0]
    a, b = (args[1], args[2]) if func in (torch.ops.aten.addmm.default, torch.ops.aten.baddbmm.default) else args[:2]
    return 2 * a.numel() * b.shape[-1]
