import pytest
import torch

from snnasr.batching import (
    BucketBatchSampler,
    batch_loader,
    curriculum_max_len,
    cut,
    epoch_plan,
    plan_batches,
)

LENGTHS = [7, 30, 55, 12, 90, 3, 41, 126, 250, 0, 19]


def _items(lengths=LENGTHS, dim=3, classes=5):
    """A list is a dataset: ``[i] -> (uttid, feats, labels)``; features number their frames."""
    g = torch.Generator().manual_seed(0)
    return [
        (
            f"u{i}",
            torch.arange(n * dim, dtype=torch.float32).reshape(n, dim) + 1000 * i + 1,
            torch.randint(0, classes, (n,), generator=g),
        )
        for i, n in enumerate(lengths)
    ]


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
    items = _items()
    plan = epoch_plan(LENGTHS, max_len, budget, seed=3)
    batches = list(batch_loader(items, BucketBatchSampler(plan)))
    seen = torch.cat([b.x[b.mask] for b in batches])
    assert sorted(seen[:, 0].tolist()) == sorted(torch.cat([x for _, x, _ in items])[:, 0].tolist())
    assert sum(b.n_frames for b in batches) == sum(LENGTHS)
    for b in batches:
        assert b.x.shape[0] * b.x.shape[1] <= budget or b.x.shape[1] == 1  # a single over-long piece may exceed
        assert b.x.shape[0] <= int(1.25 * max_len)


def test_batches_right_pad_and_mask_the_planned_pieces():
    items = _items()
    plan = epoch_plan(LENGTHS, 40, 100, seed=1)
    for pieces, b in zip(plan, batch_loader(items, BucketBatchSampler(plan)), strict=True):
        assert b.x.shape[:2] == b.y.shape == b.mask.shape and int(b.mask.sum()) == b.n_frames
        lens = b.mask.sum(0)
        # Right padding: valid frames first, then only padding.
        assert torch.equal(b.mask, torch.arange(b.mask.shape[0])[:, None] < lens[None, :])
        assert torch.all(b.x[~b.mask] == 0) and torch.all(b.y[~b.mask] == -1)
        # Valid frames carry the piece's own features and labels, in order.
        assert b.utts == [u for u, _, _ in pieces]
        for j, (u, start, end) in enumerate(pieces):
            assert int(lens[j]) == end - start
            assert torch.equal(b.x[: end - start, j], items[u][1][start:end])
            assert torch.equal(b.y[: end - start, j], items[u][2][start:end])


def test_rank_shards_are_disjoint_equal_and_deterministic():
    plan = epoch_plan([10 + (i * 7) % 60 for i in range(60)], 30, 120, seed=4)
    world = 3
    shards = [BucketBatchSampler(plan, rank, world).batches for rank in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(plan) // world
    # Step k runs batches k*world .. k*world + world-1 of the one plan: the global batch.
    for k in range(len(shards[0])):
        assert [s[k] for s in shards] == plan[k * world : (k + 1) * world]
    assert [s.batches for s in (BucketBatchSampler(plan, 1, world),)] == [shards[1]]
    # Resuming at minibatch 2 skips the first two of the rank's shard; evaluation keeps them all.
    assert BucketBatchSampler(plan, 1, world, start=2).batches == shards[1][2:]
    kept = [b for r in range(world) for b in BucketBatchSampler(plan, r, world, drop_last=False)]
    assert sorted(map(str, kept)) == sorted(map(str, plan))


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


def test_workers_outlive_a_stop_signal_to_the_process_group():
    """Ctrl-C / SIGTERM reach every process of the group; the training process alone stops (after
    its step, with a checkpoint), so a worker must keep serving batches rather than die."""
    import os
    import signal

    items = _items()
    plan = epoch_plan(LENGTHS, 20, 64, seed=2)
    it = iter(batch_loader(items, BucketBatchSampler(plan), workers=1))
    first = next(it)
    for w in it._workers:  # the loader's worker processes
        os.kill(w.pid, signal.SIGTERM)
        os.kill(w.pid, signal.SIGINT)
    rest = list(it)
    assert sum(b.n_frames for b in [first, *rest]) == sum(LENGTHS)
