"""The hybrid decoder: LM and prior estimates, and Viterbi against hand-made and brute-force best paths."""

import itertools
import math

import numpy as np
import pytest
import torch

from snnasr.decode import PhoneLoop, estimate_bigram, label_log_priors, self_loop_log_probs, tune


def test_bigram_add_k_on_a_tiny_transcript_set():
    lm = np.exp(estimate_bigram([[0, 1], [0]], n=2, k=0.5))  # index 2 = <s> (row) / </s> (column)
    # <s>: 0 twice -> (2 + .5) / (2 + 1.5); 0: 1 once, </s> once; 1: </s> once.
    assert lm[2] == pytest.approx([2.5 / 3.5, 0.5 / 3.5, 0.5 / 3.5])
    assert lm[0] == pytest.approx([0.5 / 3.5, 1.5 / 3.5, 1.5 / 3.5])
    assert lm[1] == pytest.approx([0.5 / 2.5, 0.5 / 2.5, 1.5 / 2.5])
    assert lm.sum(axis=1) == pytest.approx(np.ones(3))


def test_priors_and_self_loops_from_training_frames():
    frames = [np.array([0, 0, 0, 1, 1, -1]), np.array([1, 1, 1, 1])]
    assert np.exp(label_log_priors(frames, 3)) == pytest.approx([3 / 9, 6 / 9, 1e-8])
    # Phone 0: one segment of 3 -> 1 frame beyond a floor of 2 -> a = 1/2; phone 1: 2 and 4 -> mean excess 1.
    log_a, log_exit = self_loop_log_probs([[3], [2, 4], []], min_dur=2)
    assert np.exp(log_a) == pytest.approx([0.5, 0.5, 0.5])
    assert np.exp(log_a) + np.exp(log_exit) == pytest.approx(np.ones(3))


def _flat_loop(n: int, min_dur: int) -> PhoneLoop:
    """Uniform priors, LM and self-loops: only the acoustics and the duration floor decide."""
    return PhoneLoop(
        torch.full((n,), -math.log(n)),
        torch.full((n + 1, n + 1), -math.log(n + 1)),
        torch.full((2, n), math.log(0.5)),
        min_dur,
    )


def _posteriors(frames: list[int], n: int, p: float = 0.9) -> torch.Tensor:
    post = torch.full((len(frames), n), (1 - p) / (n - 1))
    post[torch.arange(len(frames)), torch.tensor(frames)] = p
    return post.log()


def test_min_duration_removes_a_one_frame_blip():
    loop = _flat_loop(3, min_dur=3)
    post = _posteriors([0, 0, 0, 0, 1, 2, 2, 2, 2], 3)
    assert loop.decode([post], acwt=1.0, lm_weight=1.0) == [[0, 2]]
    assert _flat_loop(3, min_dur=1).decode([post], 1.0, 1.0) == [[0, 1, 2]]  # no floor: the blip stays


def test_lm_weight_decides_an_ambiguous_segment():
    loop = _flat_loop(3, min_dur=1)
    lm = torch.full((4, 4), math.log(0.05))
    lm[3, 0] = lm[0, 2] = lm[2, 3] = math.log(0.85)  # <s> 0 2 </s> is the likely transcript
    loop.lm = lm
    post = torch.tensor([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.05, 0.5, 0.45], [0.05, 0.5, 0.45]]).log()
    assert loop.decode([post], acwt=1.0, lm_weight=0.0) == [[0, 1]]
    assert loop.decode([post], acwt=1.0, lm_weight=1.0) == [[0, 2]]


def _brute_force(am: np.ndarray, loop: PhoneLoop, lmw: float) -> list[int]:
    """Best phone sequence by enumerating every segmentation (segments >= min_dur) and labelling."""
    t, n = am.shape
    d = loop.min_dur
    lm, (log_a, log_exit) = lmw * loop.lm.numpy(), loop.loop.numpy()
    best, best_seq = -np.inf, None
    for k in range(1, t // d + 1):
        for cuts in itertools.combinations(range(1, t), k - 1):
            bounds = [0, *cuts, t]
            lens = np.diff(bounds)
            if (lens < d).any():
                continue
            for phones in itertools.product(range(n), repeat=k):
                s, prev = 0.0, n
                for q, a, b in zip(phones, bounds[:-1], bounds[1:]):
                    s += lm[prev, q] + am[a:b, q].sum() + (b - a - d) * log_a[q] + log_exit[q]
                    prev = q
                s += lm[prev, n]
                if s > best:
                    best, best_seq = s, list(phones)
    return best_seq


@pytest.mark.parametrize("min_dur", [1, 2, 3])
def test_viterbi_finds_the_brute_force_best_path_in_a_padded_batch(min_dur):
    gen = torch.Generator().manual_seed(min_dur)
    n = 3
    loop = PhoneLoop(
        torch.log_softmax(torch.randn(n, generator=gen), 0),
        torch.log_softmax(torch.randn(n + 1, n + 1, generator=gen), 1),
        torch.stack([torch.log(torch.tensor([0.3, 0.6, 0.8])), torch.log(torch.tensor([0.7, 0.4, 0.2]))]),
        min_dur,
    )
    posts = [torch.log_softmax(2 * torch.randn(t, n, generator=gen), 1) for t in (7, 4, 6)]
    decoded = loop.decode(posts, acwt=0.7, lm_weight=1.5)  # one batch, right-padded
    for post, hyp in zip(posts, decoded):
        assert hyp == _brute_force(loop.scores(post, 0.7).numpy(), loop, 1.5)
        assert loop.decode([post], 0.7, 1.5) == [hyp]  # alone = in the batch


def test_tune_picks_the_grid_point_with_the_lowest_dev_per():
    loop = _flat_loop(3, min_dur=1)
    post = _posteriors([0] * 8 + [1] + [2] * 8, 3, p=0.6)
    # The reference has no 1: a heavy acoustic weight keeps the blip, a light one drops it (each
    # phone entry costs log 1/4 of LM); the first grid point wins ties.
    acwt, lmw, per = tune(loop, [post], [[0, 2]], silence=set(), acwts=(5.0, 0.3), lm_weights=(1.0,))
    assert (acwt, lmw, per) == (0.3, 1.0, 0.0)
    assert tune(loop, [post], [[0, 1, 2]], silence=set(), acwts=(5.0, 0.3), lm_weights=(1.0,)) == (5.0, 1.0, 0.0)
