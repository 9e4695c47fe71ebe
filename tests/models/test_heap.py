"""rag/models/heap.py: a CPU pass's freed activations are reused, not page-faulted in again; the models and the
settings turn it on. mallopt is process-wide, so each case runs in a fresh Python process."""
from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt and minor-fault counts are glibc on Linux")

# A packed pass's allocations at 4,096 tokens in bf16 (1,024-wide states: 8 MB; 3,072-wide MLP activations:
# 25 MB) through 28 layers; prints the minor page faults of each of 7 passes after a first one.
PASSES = """
import json, resource, sys, torch
if sys.argv[1] == "keep":
    from rag.models.heap import keep_freed_memory
    assert keep_freed_memory()
def layer(x):
    g = x.repeat(1, 3); u = g + 1
    h = g * u
    del g, u
    return h[:, :1024] + x
def one_pass():
    x = torch.ones(4096, 1024, dtype=torch.bfloat16)
    for _ in range(28):
        x = layer(x)
one_pass()
faults = []
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    one_pass()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def _run(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@glibc_only
def test_a_pass_reuses_the_memory_the_last_one_freed():
    default = json.loads(_run(PASSES, "default"))
    kept = json.loads(_run(PASSES, "keep"))
    pages_per_activation = (4096 * 3072 * 2) // 4096
    # Medians: a pass may still grow the heap once (measured: one pass of 7 took 2,048-6,144 faults, the rest 0).
    # glibc's defaults hand the large blocks back and fault them in again, pass after pass (measured: 8,000 to
    # 300,000 faults a pass) - the reason for the module ...
    assert statistics.median(default) > pages_per_activation, default
    # ... kept, a pass's 28 layers x 4 large activations take fewer faults than a quarter of one activation's pages
    assert statistics.median(kept) < pages_per_activation / 4, (kept, default)


LOAD = """
import sys
from rag.models import heap
from rag.models.reranker import Qwen3Reranker
print(heap.kept(), end=" ")
Qwen3Reranker(sys.argv[1], device="cpu", dtype="fp32", keep_heap=False, fused=False)
print(heap.kept(), end=" ")
Qwen3Reranker(sys.argv[1], device="cpu", dtype="fp32", fused=False)
print(heap.kept())
"""


@glibc_only
def test_a_model_loaded_on_the_cpu_keeps_the_heap_unless_told_not_to(tiny_reranker_path):
    assert _run(LOAD, str(tiny_reranker_path)) == "False False True"


@pytest.mark.parametrize("keep", [True, False])
def test_the_setting_reaches_both_local_models(tiny_settings, monkeypatch, keep):
    from dataclasses import replace

    from rag.models import heap, registry

    asked = []
    monkeypatch.setattr(heap, "keep_freed_memory_for", asked.append)  # records, changes nothing process-wide
    settings = replace(tiny_settings, keep_cpu_heap=keep, fused_kernels=False)
    registry.make_embedder(settings), registry.make_reranker(settings)
    assert asked == (["cpu", "cpu"] if keep else [])


def test_the_setting_comes_from_the_environment():
    from rag.settings import Settings

    assert Settings().keep_cpu_heap is True
    assert Settings.from_env({"RAG_KEEP_CPU_HEAP": "false"}).keep_cpu_heap is False


def test_a_gpu_model_leaves_the_heap_alone():
    from rag.models.heap import keep_freed_memory_for

    assert keep_freed_memory_for("cuda:0") is False
