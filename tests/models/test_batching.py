from rag.models.batching import first_alone, token_batches


def test_batches_close_before_padding_waste():
    assert list(token_batches([0, 1, 2, 3, 4, 5], [10, 10, 11, 20, 21, 300], 8)) == [[0, 1, 2], [3, 4], [5]]
    assert list(token_batches([0, 1, 2], [5, 5, 5], 2)) == [[0, 1], [2]]
    assert list(token_batches([], [], 4)) == []
    assert list(token_batches([0, 1, 2, 3], [100, 100, 100, 100], 8, max_tokens=250)) == [[0, 1], [2, 3]]


def test_longest_first_order_pads_to_the_first_item():
    # descending lengths (the embedder's order): the width is the first item's length
    assert list(token_batches([5, 4, 3, 2, 1, 0], [300, 21, 20, 11, 10, 10], 8)) == [[5], [4, 3], [2, 1, 0]]
    assert list(token_batches([0, 1, 2], [200, 150, 150], 8, max_tokens=400)) == [[0], [1, 2]]


def test_every_item_lands_in_exactly_one_batch():
    lengths = [1, 3, 3, 7, 40, 41, 90, 500, 501, 1024]
    batches = list(token_batches(list(range(10)), lengths, 3, max_tokens=600))
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert all(len(b) <= 3 and len(b) * max(lengths[i] for i in b) <= max(600, lengths[b[0]]) for b in batches)


def test_first_alone_splits_only_the_first_batch():
    assert list(first_alone(iter([[0, 1, 2], [3, 4]]))) == [[0], [1, 2], [3, 4]]
    assert list(first_alone(iter([[0], [1, 2]]))) == [[0], [1, 2]]
    assert list(first_alone(iter([]))) == []


def test_cpu_passes_hold_twice_the_tokens_where_bf16_is_native():
    """On a CPU, a pass holds CPU_BATCH_TOKENS; where the matmuls run in bf16 natively (AMX, avx512_bf16) passes
    are short enough that streaming the weights weighs, and they hold twice that. fp32 compute, bf16 weights
    widened to fp32 and an explicit cap keep theirs."""
    from rag.models.batching import CPU_BATCH_TOKENS, CPU_BF16_BATCH_TOKENS
    from rag.models.devices import cpu_has_bf16, runtime_for

    def cap(dtype, **kwargs):
        return runtime_for("unused", "cpu", dtype, loaded=True, **kwargs).batch_tokens

    assert CPU_BF16_BATCH_TOKENS == 2 * CPU_BATCH_TOKENS
    assert cap("fp32", batch_tokens=None) == cap("bf16w", batch_tokens=None) == CPU_BATCH_TOKENS
    assert cap("bf16", batch_tokens=None) == (CPU_BF16_BATCH_TOKENS if cpu_has_bf16() else CPU_BATCH_TOKENS)
    assert cap("bf16", batch_tokens=512) == 512
