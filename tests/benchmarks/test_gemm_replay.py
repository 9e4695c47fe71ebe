"""benchmarks/gemm_replay.py: the matrix products of a call, recorded and made again alone. The bound it prints
is only as good as the recording: every product counted once, with its FLOPs, the weights kept, the activations'
layouts exact, and the replay making the same products again."""
from __future__ import annotations

import pytest
import torch

from benchmarks.gemm_replay import Layout, record_products


def products_of(replay):
    """What a replay would make: (op, each argument's weight-or-layout), in order."""
    return [(op, [a if isinstance(a, Layout) else ("weight", a.data_ptr(), tuple(a.shape)) for a in args])
            for op, args, _ in replay.calls]


def test_each_kind_of_product_is_recorded_once_with_its_flops_and_its_weights_kept():
    torch.manual_seed(0)
    w_linear, w_mm = torch.randn(6, 8), torch.randn(5, 8)
    x = torch.randn(3, 4, 8)
    flat, residual = x.reshape(12, 8), torch.randn(12, 5)
    a, b = torch.randn(2, 3, 4), torch.randn(2, 4, 7)
    strided = torch.randn(8, 24)[:, ::2].t()  # [12, 8], a transposed, strided view: its layout must survive

    def call():
        torch.nn.functional.linear(x, w_linear)
        torch.mm(strided, w_mm.t())
        torch.addmm(residual, flat, w_mm.t())
        torch.bmm(a, b)
        return torch.relu(flat)  # not a product

    replay = record_products(call, [w_linear, w_mm])
    ops = torch.ops.aten
    # F.linear reaches the dispatcher as linear or, depending on the mode and dtype, already as mm
    assert [op for op, _, _ in replay.calls][1:] == [ops.mm.default, ops.addmm.default, ops.bmm.default]
    assert replay.calls[0][0] in (ops.linear.default, ops.mm.default)
    assert replay.flops == 2 * (12 * 8 * 6 + 12 * 8 * 5 + 12 * 8 * 5 + 2 * 3 * 4 * 7)
    storage = lambda t: t.untyped_storage().data_ptr()  # noqa: E731
    linear_args, mm_args = replay.calls[0][1], replay.calls[1][1]
    assert storage(linear_args[1]) == storage(w_linear)  # the weight itself, not a copy or a random stand-in
    assert storage(mm_args[1]) == storage(w_mm)
    assert mm_args[0] == Layout((12, 8), tuple(strided.stride()), torch.float32, "cpu")
    assert all(isinstance(arg, Layout) for arg in replay.calls[3][1])  # bmm of two activations


def test_the_replay_makes_the_same_products_again():
    torch.manual_seed(0)
    weights = [torch.randn(16, 8), torch.randn(8, 16)]
    x = torch.randn(10, 8)

    def call():
        hidden = torch.nn.functional.linear(x, weights[0])
        return torch.nn.functional.linear(torch.relu(hidden), weights[1])

    replay = record_products(call, weights)
    replay.run()
    again = record_products(replay.run, weights)
    assert products_of(again) == products_of(replay) and again.flops == replay.flops


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_an_embedding_pass_records_six_products_a_layer_and_replays_them(tiny_embedder_path, fused_kernels,
                                                                         dtype):
    """The fused layers call the Linears through torch.mm (keys and values merged), torch.addmm (the residual
    inside the product) and nn.Linear; the recording must see every one of them, weights included."""
    from rag.models.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(str(tiny_embedder_path), device="cpu", dtype=dtype)
    config = embedder.model[0].auto_model.config
    documents = ["Milvus is a vector database.", "It stores embeddings and searches them by similarity."]
    replay = record_products(lambda: embedder.embed_documents(documents), list(embedder.model.parameters()))
    # q, keys and values in one product, o, gate, up, down in each layer
    assert len(replay) == 6 * config.num_hidden_layers
    weights = [a for _, args, _ in replay.calls for a in args if not isinstance(a, Layout)]
    parameters = {p.untyped_storage().data_ptr() for p in embedder.model.parameters()}
    assert len(weights) == len(replay) and all(w.untyped_storage().data_ptr() in parameters for w in weights)
    replay.run()
    assert products_of(record_products(replay.run, list(embedder.model.parameters()))) == products_of(replay)
