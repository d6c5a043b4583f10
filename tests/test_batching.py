import pytest
import torch

from snnasr.batching import curriculum_max_len, cut, epoch_batches, pack, plan_batches
from snnasr.io import DataError

LENGTHS = [7, 30, 55, 12, 90, 3, 41, 126, 250, 0, 19]


def _packed(lengths=LENGTHS, dim=3, classes=5):
    g = torch.Generator().manual_seed(0)
    items = [
        (f"u{i}", torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g))
        for i, n in enumerate(lengths)
    ]
    return pack(items, classes), items


def test_curriculum_follows_default_schedule_and_holds_last_length():
    spec = "100*5|200*4|400*4|800*4|1000*7"
    got = [curriculum_max_len(spec, e) for e in range(30)]
    assert got[:5] == [100] * 5 and got[5:9] == [200] * 4 and got[9] == 400
    assert got[17:24] == [1000] * 7 and got[24:] == [1000] * 6


@pytest.mark.parametrize(
    "length,max_len,expected",
    [
        (0, 100, []),
        (80, 100, [(0, 80)]),
        (125, 100, [(0, 125)]),  # tail up to 1.25 x max_len kept whole
        (126, 100, [(0, 100), (100, 126)]),
        (230, 100, [(0, 100), (100, 200), (200, 230)]),
        (320, 100, [(0, 100), (100, 200), (200, 320)]),
    ],
)
def test_cut_rule(length, max_len, expected):
    assert cut(length, max_len) == expected


def test_pieces_tile_utterances_and_stay_short():
    for n in range(0, 400, 7):
        pieces = cut(n, 40)
        assert [f for s, e in pieces for f in range(s, e)] == list(range(n))
        assert all(e - s <= 50 for s, e in pieces)


@pytest.mark.parametrize("max_len,budget", [(20, 64), (40, 100), (1000, 300)])
def test_every_frame_once_within_budget(max_len, budget):
    data, items = _packed()
    batches = epoch_batches(data, max_len, budget, seed=3)
    seen = torch.cat([b.idx.flatten() for b in batches])
    seen = seen[seen != data.pad]
    assert sorted(seen.tolist()) == list(range(data.num_frames))
    assert sum(b.n_frames for b in batches) == data.num_frames
    for b in batches:
        longest = b.idx.shape[0]
        assert b.idx.numel() <= budget or b.idx.shape[1] == 1  # a single over-long piece may exceed
        assert longest <= int(1.25 * max_len)


def test_gather_right_pads_and_masks():
    data, items = _packed()
    for b in epoch_batches(data, 40, 100, seed=1):
        x, y, mask = b.gather(data)
        assert x.shape[:2] == y.shape == mask.shape
        assert int(mask.sum()) == b.n_frames
        lens = mask.sum(0)
        # Right padding: valid frames first, then only padding.
        assert torch.equal(mask, torch.arange(mask.shape[0])[:, None] < lens[None, :])
        assert torch.all(x[~mask] == 0) and torch.all(y[~mask] == -1)
        # Valid frames carry the utterance's own features and labels, in order.
        for j in range(mask.shape[1]):
            start = int(b.idx[0, j])
            u = max(i for i, s in enumerate(data.starts) if s <= start and data.lengths[i] > 0)
            off = start - data.starts[u]
            n = int(lens[j])
            assert torch.equal(x[:n, j], items[u][1][off : off + n])
            assert torch.equal(y[:n, j], items[u][2][off : off + n])


def test_shuffle_is_deterministic_per_seed():
    lengths = [10 + (i * 7) % 60 for i in range(60)]

    def plan(seed):
        return plan_batches(lengths, 30, 120, torch.Generator().manual_seed(seed))

    assert plan(5) == plan(5)
    assert plan(5) != plan(6)


def test_eval_order_is_sorted_and_unshuffled():
    plan = plan_batches(LENGTHS, 1000, 200, None)
    longest = [max(e - s for _, s, e in b) for b in plan]
    assert longest == sorted(longest)
    assert plan == plan_batches(LENGTHS, 1000, 200, None)


def test_pack_rejects_bad_labels():
    with pytest.raises(DataError, match="u1"):
        pack([("u1", torch.zeros(3, 2), torch.tensor([0, 1, 7]))], 5)
    with pytest.raises(DataError, match="u2.*3 feature frames but 2"):
        pack([("u2", torch.zeros(3, 2), torch.tensor([0, 1]))], 5)


def test_batch_size_counts_sequences_and_both_limits_apply():
    lengths = [5] * 10 + [50] * 10
    # Seed batching: 4 sequences per batch whatever their length (no frame budget).
    by_count = plan_batches(lengths, 1000, None, None, batch_size=4)
    assert [len(b) for b in by_count] == [4, 4, 4, 4, 4]
    # Both limits: 4 sequences, but at most 120 padded frames -> 2 pieces of 50 per batch.
    both = plan_batches(lengths, 1000, 120, None, batch_size=4)
    assert [len(b) for b in both] == [4, 4, 2, 2, 2, 2, 2, 2]
    assert sorted(p for b in both for p in b) == sorted(p for b in by_count for p in b)


def test_config_needs_one_batch_limit():
    from snnasr.config import load_config
    from snnasr.io import ConfigError

    assert load_config(None).train.batch_size == 64  # the seed's minibatch
    with pytest.raises(ConfigError, match="both null"):
        load_config(None, ["train.batch_size=null"])
    assert load_config(None, ["train.batch_size=null", "train.batch_frames=4000"]).train.batch_frames == 4000
