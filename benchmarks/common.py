"""What every model benchmark shares: the 0.6B-shaped checkpoints with Qwen's real tokenizer, the machine
(CPU model and flags, load average), the GEMM peak measured in the same run, and the compute floor.

The compute floor of a stage is its FLOPs divided by the GEMM peak of the dtype the stage computes in:
2 x the decoder's Linear weights per token, plus the attention matmuls each token needs (QK^T and AV over the
positions before it, causal), plus any LM-head rows the stage reads. Nothing can run faster than the matmuls
it must do at the best throughput the same CPU shows for a large matmul, in the same run, under the same load.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_CACHE = "~/.cache/rag-bench"
# the Milvus 2.4 docs beside the checkout; RAG_BENCH_DOCS names another copy (a machine the checkout travels to)
MILVUS_DOCS = Path(os.environ.get("RAG_BENCH_DOCS") or REPO.parent / "shared" / "data" / "milvus-docs-2.4")


# --- checkpoints -------------------------------------------------------------------------------------------
def _use_qwen_tokenizer(path: Path, eos_post_processor: bool, padding_side: str) -> None:
    """Replace the factory's toy tokenizer by Qwen's real one (tests/qwen_tokenizer.py) in a built folder."""
    from tests import qwen_tokenizer

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                 "merges.txt", "added_tokens.json"):
        (path / name).unlink(missing_ok=True)
    tokenizer = qwen_tokenizer.build(eos_post_processor=eos_post_processor)
    tokenizer.padding_side = padding_side
    tokenizer.save_pretrained(path)


def checkpoints(cache_dir: str = DEFAULT_CACHE, embedder: str | None = None,
                reranker: str | None = None) -> tuple[Path, Path]:
    """(embedder, reranker) folders: Qwen3-0.6B-shaped (hidden 1024, 28 layers, 16/8 heads, head_dim 128, ffn
    3072, vocab 151,669, tied embeddings), random weights stored in bf16 like the releases, Qwen's real
    tokenizer. Built once under `cache_dir`; `embedder`/`reranker` folders (real checkpoints) are used as given."""
    from tests.model_factory import QWEN3_06B, build_embedder, build_reranker

    cache = Path(cache_dir).expanduser()
    found = []
    for name, given, build, eos, side in (
            ("qwen3-embedding-0.6b-shaped-qwentok-bf16", embedder, build_embedder, True, "left"),
            ("qwen3-reranker-0.6b-shaped-qwentok-bf16", reranker, build_reranker, False, "left")):
        path = Path(given) if given else cache / name
        if not path.exists():
            print(f"building {path} (random weights, real Qwen tokenizer, once; ~1 min)...", flush=True)
            tmp = path.with_name(path.name + ".tmp")
            build(tmp, sizes=QWEN3_06B, bf16=True)
            _use_qwen_tokenizer(tmp, eos, side)
            tmp.rename(path)
        found.append(path)
    return found[0], found[1]


# --- corpora -----------------------------------------------------------------------------------------------
def faq_chunks(folder: Path = MILVUS_DOCS / "faq") -> list[str]:
    """The Milvus tutorial's chunking of the real Milvus FAQ: each file's text split on "# "."""
    chunks = []
    for file in sorted(Path(folder).glob("*.md")):
        chunks += [c for c in file.read_text(encoding="utf-8").split("# ") if c.strip()]
    return chunks


def shipped_faq_queries() -> list[str]:
    """The FAQ questions the app ships (assets/eval/milvus_faq.jsonl)."""
    import json

    lines = (REPO / "assets" / "eval" / "milvus_faq.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["query"] for line in lines if line.strip()]


# --- the machine -------------------------------------------------------------------------------------------
def cpu_summary() -> str:
    """CPU model, cores torch uses, and whether it has native bf16 (avx512_bf16 / amx_bf16) or AVX-512."""
    import torch

    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo", encoding="ascii", errors="ignore"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    yes = lambda f: "yes" if f in flags else "no"  # noqa: E731
    return (f"CPU: {model}, {os.cpu_count()} logical cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}; "
            f"avx2 {yes('avx2')}, avx512f {yes('avx512f')}, avx512_bf16 {yes('avx512_bf16')}, "
            f"amx_bf16 {yes('amx_bf16')}"
            + (f"; oneDNN capped at {os.environ[ONEDNN_ISA_CAP]}" if ONEDNN_ISA_CAP in os.environ else ""))


# oneDNN's own switch: the best instruction set its matmuls may use (read at its first matmul, so set before one)
ONEDNN_ISA_CAP = "ONEDNN_MAX_CPU_ISA"


def run_without_amx() -> None:
    """Run this process's bf16 work as a CPU with avx512_bf16 and no AMX tiles would (Zen 4: the issue's own
    CPU kind, which no session has had): oneDNN's matmuls, the GEMM peak of the floor included, capped at
    AVX-512 with bf16 dot products, and our attention on its vector kernel. Call it before the first matmul."""
    os.environ[ONEDNN_ISA_CAP] = "AVX512_CORE_BF16"
    from rag.models import native

    status = native.wait(timeout=600)
    if native.ops() is None:
        raise SystemExit(f"--without-amx needs the fused CPU kernels, which are not usable: {status}")
    native.ops().amx_attention(False)


def machine_summary(device: str = "cpu") -> str:
    """cpu_summary(), and the GPU's name, memory and torch's CUDA version when `device` is one."""
    import torch

    if not device.startswith("cuda"):
        return cpu_summary()
    props = torch.cuda.get_device_properties(device)
    return (f"{cpu_summary()}\nGPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
            f"{props.multi_processor_count} SMs, CUDA {torch.version.cuda}")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


def compute_dtype(precision) -> str:
    """The dtype the matmuls run in for a `rag.models.devices.Precision` (bf16 weights widen to fp32)."""
    if precision.bf16_weights:
        return "fp32"
    return "int8" if precision.int8 else str(precision.dtype).replace("torch.", "").replace("float32", "fp32") \
        .replace("bfloat16", "bf16").replace("float16", "fp16")


class Clock:
    """Wall seconds and this process's CPU seconds (all threads) of a block. On a shared machine, waiting for a
    core inflates wall time but not CPU time, so ratios of CPU seconds are the steadier figure."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def gemm_peak(dtype: str = "fp32", repeat: int = 10, device: str = "cpu") -> tuple[float, float]:
    """Best GFLOP/s of the models' own large Linear shapes (2048 rows x 1024 -> 3072 and 3072 -> 1024), best
    of 3 rounds, per wall second and per CPU second of all torch threads / threads: the ceiling the floor is
    computed against, measured now, under the current load. On a GPU the rounds wait for the device, and the CPU
    figure is meaningless (the host only launches)."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    threads = torch.get_num_threads()
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    wall = cpu = 0.0
    with torch.inference_mode():
        for k, n in ((1024, 3072), (3072, 1024)):
            layer = torch.nn.Linear(k, n, bias=False, device=device).to(torch_dtype).eval()
            x = torch.randn(2048, k, dtype=torch_dtype, device=device)
            layer(x)
            synchronize()
            flops = 2 * x.shape[0] * k * n * repeat / 1e9
            for _ in range(3):
                with Clock() as clock:
                    for _ in range(repeat):
                        layer(x)
                    synchronize()
                wall, cpu = max(wall, flops / clock.wall), max(cpu, flops / (clock.cpu / threads))
    return wall, cpu


# --- FLOPs -------------------------------------------------------------------------------------------------
def linear_flops_per_token(config) -> float:
    """2 x the decoder's Linear weights (q, k, v, o, gate, up, down) per token."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    return 2 * layers * (h * q + 2 * h * kv + q * h + 3 * h * i)


def attention_flops(config, new: int, past: int = 0) -> float:
    """QK^T and AV for `new` tokens after `past` cached ones, causal: token t attends to past + t + 1."""
    per_position = 2 * 2 * config.num_attention_heads * config.head_dim * config.num_hidden_layers
    return per_position * (new * past + new * (new + 1) / 2)


def sequence_flops(config, new: int, past: int = 0, head_rows: int = 0) -> float:
    """FLOPs a model must do for one sequence: Linears + causal attention (+ `head_rows` LM-head rows read at
    its last position, e.g. 2 for a yes/no reranker)."""
    return linear_flops_per_token(config) * new + attention_flops(config, new, past) + \
        2 * config.hidden_size * head_rows


class Stage:
    """One printed line: seconds (wall and CPU), tokens, FLOPs, floor at the measured peak, ratios, the model
    card's time. The CPU-second ratio divides this process's CPU seconds (all threads / threads) by the floor in
    CPU seconds; waiting for a busy core counts in wall time only."""

    HEADER = (f"{'stage':<30}{'impl':<34}{'dtype':>6}{'wall s':>8}{'cpu s':>8}{'tokens':>7}{'GFLOP':>7}"
              f"{'floor s':>8}{'x floor':>8}{'x fl.cpu':>9}{'card s':>8}{'card/us':>8}  parity")

    def __init__(self, name: str, impl: str, dtype: str, clock: Clock, tokens: int, flops: float,
                 peak: tuple[float, float], card: Clock | None = None, parity: str = ""):
        import torch

        self.name, self.impl, self.dtype, self.tokens, self.flops = name, impl, dtype, tokens, flops
        self.seconds, self.cpu_seconds = clock.wall, clock.cpu / torch.get_num_threads()
        self.peak, self.card, self.parity = peak, card, parity

    @property
    def floor(self) -> float:
        return self.flops / (self.peak[0] * 1e9)

    @property
    def ratio_cpu(self) -> float:
        return self.cpu_seconds / (self.flops / (self.peak[1] * 1e9))

    def line(self) -> str:
        card = f"{self.card.wall:8.2f}{self.card.wall / self.seconds:8.2f}" if self.card else f"{'-':>8}{'-':>8}"
        return (f"{self.name:<30}{self.impl:<34}{self.dtype:>6}{self.seconds:8.2f}{self.cpu_seconds:8.2f}"
                f"{self.tokens:7d}{self.flops / 1e9:7.0f}{self.floor:8.2f}{self.seconds / self.floor:8.2f}"
                f"{self.ratio_cpu:9.2f}{card}  {self.parity}")
