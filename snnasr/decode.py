"""A hybrid phone decoder that needs no Kaldi: posteriors, priors, a phone loop and a bigram LM.

Why: a frame classifier's argmax, with repeats collapsed, turns every one-frame flicker into an
insertion ("collapse PER", 130-600 % on real speech).  The seed scored its models the hybrid
way instead (log-posteriors minus log-priors into a Kaldi decoding graph, acoustic scale and LM
weight chosen on dev).  This module does the same on the score level without Kaldi:

- **Acoustic score** per frame and phone ``q``: ``acwt * (log sum_{c -> q} p(c|x) - log P(q))``,
  the network's posteriors summed over the training classes that fold to ``q`` (phone48 ->
  phone39, pdf -> phone) divided by the label prior ``P(q)`` counted on the training alignments
  (a scaled likelihood, as in every hybrid system).
- **Phone loop with a minimum duration**: each phone is a left-to-right chain of ``min_dur``
  states; states ``0 .. min_dur-2`` are passed in one frame each, the last one has a self-loop
  (and every segment, the last one included, pays ``log (1 - a_q)`` once to leave it).
  Its probability ``a_q`` is the maximum-likelihood geometric fit of the training durations
  beyond the floor: ``a_q = e / (e + 1)`` with ``e`` the mean of ``duration - min_dur`` over
  the training segments of ``q``.  So a phone lasts at least ``min_dur`` frames.
- **Bigram phone LM** on the training transcripts (frame labels at the score level, repeats
  collapsed, silence kept as a token), with ``<s>``/``</s>`` and add-k smoothing:
  ``P(q | p) = (c(p, q) + k) / (c(p) + k V)``, V = number of phones + 1 (``</s>``).  Its log is
  multiplied by ``lm_weight`` at every phone entry (and at the end).
- **Viterbi**, batched over utterances (``[B, phones, states]`` tensors, one vectorised step per
  frame, padded frames leave the state alone), and a backtrace vectorised the same way.

The decoded sequence is the phones entered along the best path, in order; scoring drops
silence from it and from the reference (see :mod:`snnasr.metrics`).  ``acwt`` and ``lm_weight``
are picked on the dev set by :func:`tune` (lowest PER over a grid); the duration model is not
scaled, so the two are not redundant.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from snnasr.metrics import EditCounts, collapse, total_edits

ACWT_GRID = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
LM_WEIGHT_GRID = (0.0, 0.5, 1.0, 2.0, 4.0)
PRIOR_FLOOR = 1e-8


def label_log_priors(frame_labels: Iterable[np.ndarray], n: int, floor: float = PRIOR_FLOOR) -> np.ndarray:
    """``log P(q)`` from frame label counts (-1 = no label, skipped); unseen labels get ``floor``."""
    counts = np.zeros(n, dtype=np.float64)
    for y in frame_labels:
        y = np.asarray(y)
        counts += np.bincount(y[y >= 0], minlength=n)[:n]
    total = counts.sum()
    if total == 0:
        return np.full(n, np.log(1.0 / n))
    return np.log(np.maximum(counts / total, floor))


def estimate_bigram(sequences: Iterable[Sequence[int]], n: int, k: float = 0.5) -> np.ndarray:
    """Add-k bigram ``log P(next | prev)`` as an ``[n + 1, n + 1]`` array.

    Row ``n`` is the context ``<s>``, column ``n`` the event ``</s>``; phones are ``0..n-1``.
    Every row sums to 1 over its ``n + 1`` columns.  ``k > 0`` gives unseen pairs a small
    probability, so no phone sequence is impossible.
    """
    if k <= 0:
        raise ValueError("add-k smoothing needs k > 0")
    counts = np.zeros((n + 1, n + 1), dtype=np.float64)
    for seq in sequences:
        tokens = [n, *[int(s) for s in seq], n]  # <s> ... </s>, both as index n
        for a, b in itertools.pairwise(tokens):
            counts[a, b] += 1
    probs = (counts + k) / (counts.sum(axis=1, keepdims=True) + k * (n + 1))
    return np.log(probs)


def segment_durations(frame_labels: Iterable[np.ndarray], n: int) -> list[list[int]]:
    """Run lengths of each label (-1 frames break runs and are not counted)."""
    out: list[list[int]] = [[] for _ in range(n)]
    for y in frame_labels:
        for label, run in itertools.groupby(np.asarray(y).tolist()):
            if label >= 0:
                out[label].append(len(list(run)))
    return out


def self_loop_log_probs(durations: list[list[int]], min_dur: int) -> np.ndarray:
    """``(log a_q, log (1 - a_q))`` ``[2, n]`` of the last state's self-loop (module docstring).

    Segments shorter than the floor count as exactly ``min_dur``; a phone never seen in training
    gets ``a = 0.5``.
    """
    loops = []
    for d in durations:
        excess = float(np.mean([max(x - min_dur, 0) for x in d])) if d else 1.0
        a = min(max(excess / (excess + 1.0), 1e-4), 1 - 1e-4)
        loops.append(a)
    stay = np.array(loops)
    return np.stack([np.log(stay), np.log1p(-stay)])


def fold_matrix(fold: np.ndarray, n: int) -> torch.Tensor:
    """``[C, n]`` 0/1 matrix summing training-class posteriors into score-level phones."""
    m = torch.zeros(len(fold), n)
    keep = np.flatnonzero(fold >= 0)
    m[torch.from_numpy(keep), torch.from_numpy(fold[keep])] = 1.0
    return m


@dataclass
class PhoneLoop:
    """Everything the decoder knows besides the acoustics, estimated on the training set."""

    log_priors: torch.Tensor  # [n]
    lm: torch.Tensor  # [n + 1, n + 1], log P(next | prev), index n = <s> (row) / </s> (column)
    loop: torch.Tensor  # [2, n]: log a_q, log (1 - a_q)
    min_dur: int

    @property
    def n(self) -> int:
        return self.log_priors.shape[0]

    @classmethod
    def estimate(cls, frame_labels: list[np.ndarray], n: int, min_dur: int = 3, lm_k: float = 0.5) -> PhoneLoop:
        """Priors, durations and the bigram from training frame labels at the score level."""
        if min_dur < 1:
            raise ValueError("min_dur must be >= 1")
        seqs = [collapse(np.asarray(y)[np.asarray(y) >= 0]) for y in frame_labels]
        return cls(
            torch.from_numpy(label_log_priors(frame_labels, n)).float(),
            torch.from_numpy(estimate_bigram(seqs, n, lm_k)).float(),
            torch.from_numpy(self_loop_log_probs(segment_durations(frame_labels, n), min_dur)).float(),
            min_dur,
        )

    def scores(self, log_post: torch.Tensor, acwt: float) -> torch.Tensor:
        """Scaled log-likelihoods ``acwt (log p(q|x) - log P(q))`` from score-level log-posteriors."""
        return acwt * (log_post - self.log_priors.to(log_post.device))

    def viterbi(self, am: torch.Tensor, lengths: Sequence[int], lm_weight: float) -> list[list[int]]:
        """Best phone sequences for a batch: ``am`` ``[T, B, n]`` acoustic scores, right-padded.

        One vectorised step per frame over ``[B, n, min_dur]`` states; backpointers are kept
        only where a path can branch (phone entries and the last state's self-loop).
        """
        t_max, b, n = am.shape
        d = self.min_dur
        dev = am.device
        lm = (lm_weight * self.lm).to(dev)
        trans = lm[:n, :n]  # [from, to]
        log_a, log_exit = (x.to(dev) for x in self.loop)
        lengths_t = torch.as_tensor(list(lengths), device=dev)
        delta = torch.full((b, n, d), float("-inf"), device=dev)
        delta[:, :, 0] = lm[n, :n][None, :] + am[0]
        entered_from = torch.zeros((t_max, b, n), dtype=torch.long, device=dev)  # phone left when q was entered
        stayed = torch.zeros((t_max, b, n), dtype=torch.bool, device=dev)  # last state reached by its self-loop
        for t in range(1, t_max):
            leave = delta[:, :, d - 1] + log_exit[None, :]  # [B, from]
            enter, src = (leave[:, :, None] + trans[None]).max(dim=1)  # [B, to]
            new = torch.empty_like(delta)
            stay = delta[:, :, d - 1] + log_a[None, :]
            if d == 1:
                new[:, :, 0] = torch.maximum(enter, stay)
                stayed[t] = stay >= enter  # ties: stay, so an equal re-entry adds no token
            else:
                new[:, :, 0] = enter
                new[:, :, 1 : d - 1] = delta[:, :, 0 : d - 2]
                new[:, :, d - 1] = torch.maximum(delta[:, :, d - 2], stay)
                stayed[t] = stay >= delta[:, :, d - 2]
            new += am[t][:, :, None]
            entered_from[t] = src
            active = (t < lengths_t)[:, None, None]
            delta = torch.where(active, new, delta)
        final = delta[:, :, d - 1] + (log_exit + lm[:n, n])[None, :]
        # An utterance shorter than min_dur cannot finish a phone: end in its best state instead.
        final = torch.where(torch.isfinite(final.max(dim=1, keepdim=True).values), final, delta.amax(dim=2))
        phone = final.argmax(dim=1)
        state = torch.where(
            torch.isfinite(delta[:, :, d - 1].max(dim=1).values),
            torch.full_like(phone, d - 1),
            delta.gather(1, phone[:, None, None].expand(b, 1, d)).squeeze(1).argmax(dim=1),
        )
        starts = torch.zeros((t_max, b), dtype=torch.bool, device=dev)
        phones = torch.zeros((t_max, b), dtype=torch.long, device=dev)
        rows = torch.arange(b, device=dev)
        for t in range(t_max - 1, -1, -1):
            active = t < lengths_t
            phones[t] = phone
            if t == 0:
                starts[t] = active
                break
            self_loop = (state == d - 1) & stayed[t, rows, phone]
            entry = (state == 0) & ~self_loop
            starts[t] = active & entry
            prev_phone = torch.where(entry, entered_from[t, rows, phone], phone)
            prev_state = torch.where(entry, torch.full_like(state, d - 1), torch.where(self_loop, state, state - 1))
            phone = torch.where(active, prev_phone, phone)
            state = torch.where(active, prev_state, state)
        starts_np, phones_np = starts.cpu().numpy(), phones.cpu().numpy()
        return [phones_np[starts_np[:, i], i].tolist() for i in range(b)]

    def decode(
        self, log_posts: list[torch.Tensor], acwt: float, lm_weight: float, batch_frames: int = 200_000
    ) -> list[list[int]]:
        """Phone sequences for score-level log-posteriors ``[T_i, n]``, batched by length."""
        order = sorted(range(len(log_posts)), key=lambda i: log_posts[i].shape[0])
        out: list[list[int]] = [[] for _ in log_posts]
        i = 0
        while i < len(order):
            j = i + 1
            while j < len(order) and log_posts[order[j]].shape[0] * (j - i + 1) <= batch_frames:
                j += 1
            idx = order[i:j]
            am = torch.nn.utils.rnn.pad_sequence([self.scores(log_posts[k], acwt) for k in idx])
            for k, seq in zip(idx, self.viterbi(am, [log_posts[k].shape[0] for k in idx], lm_weight)):
                out[k] = seq
            i = j
        return out


def score(refs: list[list[int]], hyps: list[list[int]], silence: set[int]) -> EditCounts:
    """Corpus S/D/I of decoded sequences against references, silence dropped from both."""
    return total_edits(
        ([p for p in r if p not in silence], [p for p in h if p not in silence]) for r, h in zip(refs, hyps)
    )


def tune(
    loop: PhoneLoop,
    log_posts: list[torch.Tensor],
    refs: list[list[int]],
    silence: set[int],
    acwts: Sequence[float] = ACWT_GRID,
    lm_weights: Sequence[float] = LM_WEIGHT_GRID,
) -> tuple[float, float, float]:
    """``(acwt, lm_weight, PER)`` with the lowest PER on this (dev) set over the grid.

    Ties keep the first grid point, so the result is deterministic.
    """
    best = (acwts[0], lm_weights[0], float("inf"))
    for acwt, lmw in itertools.product(acwts, lm_weights):
        rate = score(refs, loop.decode(log_posts, acwt, lmw), silence).rate
        if rate < best[2]:
            best = (acwt, lmw, rate)
    return best


def fold_log_posteriors(logits: torch.Tensor, fold: torch.Tensor) -> torch.Tensor:
    """Score-level log-posteriors ``[..., n]`` from training-level logits ``[..., C]``."""
    post = torch.softmax(logits.float(), dim=-1) @ fold.to(logits.device)
    return torch.log(post.clamp_min(1e-30))
