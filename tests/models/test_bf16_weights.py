"""bf16-stored checkpoints (as Qwen3 releases are) computed in fp32 with bf16 weights in memory: the same
numbers as the official reference loading them in fp32, at half the weight memory."""
import numpy as np
import pytest
import torch

from rag.models.devices import checkpoint_dtype, cpu_prefers_bf16, resolve_precision
from rag.models.embedder import SentenceTransformerEmbedder
from rag.models.reranker import Qwen3Reranker
from tests.model_factory import build_embedder, build_reranker
from tests.models.test_reranker import DOCS, QUERY
from tests.reference import ReferenceEmbedder, ReferenceReranker


@pytest.fixture(scope="module")
def bf16_paths(tmp_path_factory, tokenizer_cache):
    root = tmp_path_factory.mktemp("bf16-models")
    return (build_embedder(root / "emb", bf16=True, tokenizer_cache=tokenizer_cache),
            build_reranker(root / "rr", bf16=True, tokenizer_cache=tokenizer_cache))


def test_checkpoint_dtype_is_read_from_the_config(bf16_paths, tiny_reranker_path):
    assert checkpoint_dtype(str(bf16_paths[1])) == "bfloat16"
    assert checkpoint_dtype(str(tiny_reranker_path)) == "float32"
    assert checkpoint_dtype("/no/such/model") is None


def test_auto_keeps_bf16_weights_only_for_bf16_checkpoints_on_cpus_without_fast_bf16():
    auto = resolve_precision("auto", "cpu", "bfloat16")
    assert auto.bf16_weights is (not cpu_prefers_bf16())
    assert not resolve_precision("auto", "cpu", "float32").bf16_weights
    assert resolve_precision("auto", "cpu", "float32").dtype in (torch.float32, torch.bfloat16)


def test_reranker_with_bf16_weights_matches_fp32_reference(bf16_paths):
    ours = Qwen3Reranker(str(bf16_paths[1]), device="cpu", dtype="bf16w")
    layer = ours.model.model.layers[0]
    assert layer.mlp.up_proj.weight.dtype == torch.bfloat16
    assert layer.input_layernorm.weight.dtype == torch.float32
    reference = ReferenceReranker(str(bf16_paths[1]))  # loads fp32, as the model card does
    got, want = ours.score(QUERY, DOCS), reference.score(QUERY, DOCS)
    assert max(abs(a - b) for a, b in zip(got, want)) <= 1e-4


def test_embedder_with_bf16_weights_matches_fp32_reference(bf16_paths):
    ours = SentenceTransformerEmbedder(str(bf16_paths[0]), device="cpu", dtype="bf16w")
    texts = ["Milvus stores vectors.", "A longer passage about lava, ash and magma " * 5]
    ref = ReferenceEmbedder(str(bf16_paths[0])).embed(texts).numpy()
    got = ours.embed_documents(texts)
    assert got.dtype == np.float32
    assert np.min(np.sum(got * ref, axis=1)) >= 0.9999


def _file_backed(model) -> list[str]:
    """Names of the tensors whose memory is a mapping of a .safetensors file."""
    ranges = []
    for line in open("/proc/self/maps", encoding="ascii", errors="ignore"):
        fields = line.split()
        if len(fields) >= 6 and fields[5].endswith(".safetensors"):
            ranges.append([int(x, 16) for x in fields[0].split("-")])
    return [name for name, t in list(model.named_parameters()) + list(model.named_buffers())
            if any(a <= t.data_ptr() < b for a, b in ranges)]


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/maps"), reason="Linux memory maps")
def test_loaded_weights_live_in_process_memory_not_in_the_checkpoint_file(bf16_paths):
    """transformers keeps tensors loaded in their stored dtype as views of the mmapped safetensors file, whose
    pages the kernel may drop while the model idles (the next question then reads them back from disk)."""
    from transformers import AutoModelForCausalLM

    from rag.models.devices import own_weights

    plain = AutoModelForCausalLM.from_pretrained(str(bf16_paths[1]), dtype=torch.bfloat16)
    mapped = _file_backed(plain)
    assert mapped  # the hazard exists: without the copy these stay file pages
    before = {name: t.detach().clone() for name, t in plain.named_parameters()}
    assert own_weights(plain) == len(mapped) and _file_backed(plain) == []
    assert all(torch.equal(t, before[name]) for name, t in plain.named_parameters())
    assert plain.get_output_embeddings().weight is plain.get_input_embeddings().weight  # still tied
    ours = [Qwen3Reranker(str(bf16_paths[1]), device="cpu", dtype="bf16w").model,
            SentenceTransformerEmbedder(str(bf16_paths[0]), device="cpu", dtype="bf16w").model]
    assert [_file_backed(m) for m in ours] == [[], []]


def _resident_kb(path) -> int:
    """kB of `path`'s memory mappings resident in this process (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps", encoding="ascii", errors="ignore"):
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[:1] == ["Rss:"]:
            total += int(fields[1])
    return total


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/smaps"), reason="Linux memory maps")
def test_the_copy_does_not_hold_the_checkpoint_file_pages_as_well(bf16_paths):
    """The copy reads every page of the file; those pages then leave the process, so loading never holds the
    file and the copy at once (measured at 0.6B: peak RSS 3.93 -> 2.82 GB for both models)."""
    import mmap

    from transformers import AutoModelForCausalLM

    from rag.models.devices import own_weights

    plain = AutoModelForCausalLM.from_pretrained(str(bf16_paths[1]), dtype=torch.bfloat16)
    file = bf16_paths[1] / "model.safetensors"
    tensors = len(_file_backed(plain))
    keep = next(plain.parameters()).data  # still a view of the file: keeps the mapping alive to be measured
    reference = keep.clone()
    own_weights(plain)
    boundary_kb = 2 * mmap.PAGESIZE // 1024 * tensors  # at most the two pages each tensor shares with neighbours
    assert _resident_kb(file) <= boundary_kb < file.stat().st_size // 1024 // 10
    assert torch.equal(keep, reference)  # a view of dropped pages reads the file's bytes back
