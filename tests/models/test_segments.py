"""Packed segments' SDPA paths (rag/models/segments.py): whole segments, and single rows seeing exactly what they
see inside their segment (the last layer of a fused model computes only the rows it returns)."""
import pytest
import torch

from rag.models.segments import Segment, grouped_sdpa, row_attention, segment_sdpa, wanted_rows

# segments after `past` cached positions: no prefix, a prefix running straight into the segment, a shared prefix
# (the cached head) the segment does not follow, and a one-row segment
SEGMENTS = [Segment(0, 5, 0), Segment(5, 12, 4 + 5), Segment(12, 20, 4), Segment(20, 21, 4)]
PAST = 4


def _inputs(heads=4, kv_heads=2, head_dim=8):
    torch.manual_seed(3)
    rows = SEGMENTS[-1].end
    return (torch.randn(1, heads, rows, head_dim), torch.randn(1, kv_heads, PAST + rows, head_dim),
            torch.randn(1, kv_heads, PAST + rows, head_dim))


def test_single_rows_attend_as_inside_their_segments():
    query, key, value = _inputs()
    whole = torch.cat([segment_sdpa(query, key, value, PAST, s, None) for s in SEGMENTS], dim=1)
    rows = [0, 4, 5, 8, 11, 12, 19, 20]  # first, middle and last rows of every kind of segment
    ours = row_attention(query[:, :, rows], key, value, PAST, rows, SEGMENTS, None)
    assert ours.shape == (1, len(rows), query.shape[1], query.shape[3])
    torch.testing.assert_close(ours, whole[:, rows], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("group", [SEGMENTS, SEGMENTS[1:], SEGMENTS[2:4], SEGMENTS[:2]],
                         ids=["all", "after-the-first", "on-the-shared-head", "prefix-into-segment"])
def test_one_masked_call_for_consecutive_segments_equals_a_call_per_segment(group):
    """The GPU's grouped attention: every row sees what it sees in its own segment's call (a shared head, a prefix
    reaching into earlier rows of the call, a one-row segment), whichever segments the group starts and ends on."""
    query, key, value = _inputs()
    each = torch.cat([segment_sdpa(query, key, value, PAST, s, None) for s in group], dim=1)
    grouped = grouped_sdpa(query, key, value, PAST, group, None)
    assert grouped.shape == each.shape
    torch.testing.assert_close(grouped, each, rtol=1e-5, atol=1e-6)


def test_a_group_with_a_gap_between_its_segments_is_refused():
    query, key, value = _inputs()
    with pytest.raises(ValueError, match="must be consecutive"):
        grouped_sdpa(query, key, value, PAST, [SEGMENTS[0], SEGMENTS[2]], None)


def test_a_row_outside_every_segment_is_refused():
    query, key, value = _inputs()
    with pytest.raises(ValueError, match="row 21 lies in no segment"):
        row_attention(query[:, :, :1], key, value, PAST, [21], SEGMENTS, None)


def test_wanted_rows_reads_a_restricted_and_a_full_output_alike():
    states = torch.arange(10.0)[:, None].expand(10, 3)
    rows = [2, 5, 9]
    assert torch.equal(wanted_rows(states, rows), states[rows])  # every row came back: pick them
    assert torch.equal(wanted_rows(states[rows], rows), states[rows])  # only the wanted rows came back
    assert torch.equal(wanted_rows(states[:3], [0, 1, 2]), states[:3])  # one-token texts: both readings agree
