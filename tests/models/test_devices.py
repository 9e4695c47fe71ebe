"""`dtype="auto"` on a CPU: bf16 only where this CPU's bf16 matmuls measure faster than fp32 (rag/models/devices.py)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from rag.models import devices, native
from rag.models.devices import BF16_MIN_SPEEDUP, Precision, resolve_precision


def amx_usable() -> bool:
    """The kernels' own check: an AVX-512 CPU whose AMX tiles this process may use."""
    return "-mamx-bf16" in native.isa_flags(torch)


@pytest.fixture
def fresh_choice():
    """The choice is cached per process: measure again in the test, and leave no faked answer behind."""
    devices.cpu_prefers_bf16.cache_clear()
    yield
    devices.cpu_prefers_bf16.cache_clear()


@pytest.mark.parametrize("speedup, bf16", [(0.6, False), (1.19, False), (BF16_MIN_SPEEDUP, True), (6.0, True)])
def test_auto_computes_in_bf16_only_where_its_matmuls_measure_faster(monkeypatch, fresh_choice, speedup, bf16):
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(devices, "bf16_matmul_speedup", lambda: speedup)
    # a bf16 checkpoint: bf16 compute, or its bf16 weights kept and computed in fp32
    stored_bf16 = resolve_precision("auto", "cpu", "bfloat16")
    assert stored_bf16 == (Precision(torch.bfloat16) if bf16 else Precision(torch.bfloat16, bf16_weights=True))
    # an fp32 checkpoint: cast to bf16, or left in fp32
    assert resolve_precision("auto", "cpu", "float32").dtype == (torch.bfloat16 if bf16 else torch.float32)


def test_without_native_bf16_nothing_is_measured(monkeypatch, fresh_choice):
    def measure():
        raise AssertionError("emulated bf16 needs no measurement: it is always slower")

    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(devices, "bf16_matmul_speedup", measure)
    assert resolve_precision("auto", "cpu", "bfloat16") == Precision(torch.bfloat16, bf16_weights=True)


def test_the_choice_is_measured_once_per_process(monkeypatch, fresh_choice):
    calls = []
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(devices, "bf16_matmul_speedup", lambda: calls.append(1) or 3.0)
    for _ in range(3):
        resolve_precision("auto", "cpu", "bfloat16")
    assert len(calls) == 1


def test_the_speedup_comes_from_real_matmuls():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    speedup = devices.bf16_matmul_speedup()
    assert torch.equal(torch.rand(3), expected), "the measurement must not move the caller's seeded random state"
    assert 0.0 < speedup < float("inf")
    if amx_usable():  # AMX tiles multiply bf16 several times faster than AVX-512 does fp32 (~6x measured)
        assert speedup > 2 * BF16_MIN_SPEEDUP


PROBE = """
import json
from rag.models import devices
speedup = devices.bf16_matmul_speedup()
precision = devices.resolve_precision("auto", "cpu", "bfloat16")
print(json.dumps({"speedup": speedup, "bf16_weights": precision.bf16_weights}))
"""


def probe(env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not amx_usable(), reason="needs a CPU whose AMX tiles this process may use")
def test_an_amx_cpu_without_its_tiles_is_judged_by_the_kernels_it_falls_back_to():
    """The case the measurement exists for: the CPU has avx512_bf16 and AMX, but oneDNN may not use the tiles
    (here capped by its own switch, as a kernel that does not grant them leaves it). Its AVX-512 bf16 kernels are
    slower than fp32 on these cores (0.6x measured), so `auto` keeps the bf16 weights and computes in fp32."""
    with_tiles = probe({})
    without = probe({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"})
    assert not with_tiles["bf16_weights"]
    assert without["speedup"] < with_tiles["speedup"] / 2
    assert without["bf16_weights"] is (without["speedup"] < BF16_MIN_SPEEDUP)
