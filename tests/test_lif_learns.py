"""The vanilla LIF SNN learns on real speech: a guard against its regression to chance.

Fixture: the 12 real FSDD recordings in tests/data/fsdd (digits 2 and 4, two speakers), MFCC +
deltas with per-utterance mean normalisation, sil / two / four frame labels from energy
endpointing, as the fsdd recipe makes them.  A tiny LIF (2 x 16) trains a few epochs on them.
Chance is ln(C) (uniform output) and the label entropy H (the best output that ignores the
audio); a LIF that learns goes clearly below both.  The seed's exact initial β = 1 is trained
too: on these short recordings it learns as well, so this pins that neither setting is broken.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from snnasr.audio import read_audio
from snnasr.batching import BucketBatchSampler, batch_loader, epoch_plan
from snnasr.config import load_config
from snnasr.data.fsdd import parse_name, word_segments
from snnasr.features import FeatureOptions, extract
from snnasr.labels import frame_labels_from_segments
from snnasr.models import build
from snnasr.train import masked_loss_correct

FIXTURE = Path(__file__).parent / "data" / "fsdd" / "recordings"
CLASSES = ["sil", "two", "four"]
WORDS = {2: "two", 4: "four"}


def _items():
    opts = FeatureOptions(ftype="mfcc", num_bins=23, num_ceps=13, deltas=True, cmvn="utt")
    items = []
    for path in sorted(FIXTURE.glob("*.wav")):
        rec = parse_name(path)
        samples, rate = read_audio(path)
        feats = extract(samples, rate, opts)
        feats -= feats.mean(axis=0)
        labels = frame_labels_from_segments(word_segments(path, WORDS[rec.digit]), len(feats), rate)
        items.append((rec.uttid, torch.from_numpy(feats), torch.tensor([CLASSES.index(s) for s in labels])))
    return items


def _train_losses(overrides, epochs=6):
    data = _items()
    lengths = [len(x) for _, x, _ in data]
    cfg = load_config(None, ["model.hidden=16", "model.dropout=0.0", *overrides], model={"arch": "lif"})
    torch.manual_seed(0)
    model = build("lif", cfg.model, data[0][1].shape[1], len(CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for epoch in range(epochs):
        total = 0.0
        for batch in batch_loader(data, BucketBatchSampler(epoch_plan(lengths, 1000, None, epoch, batch_size=4))):
            loss, _ = masked_loss_correct(model(batch.x, batch.mask).logits, batch.y)
            opt.zero_grad()
            (loss / batch.n_frames).backward()
            opt.step()
            total += loss.item()
        losses.append(total / sum(lengths))
    return losses, data


@pytest.mark.parametrize(
    "overrides", [[], ["model.lif_decay_init=1.0", "model.lif_decay_init_max=null"]], ids=["default", "seed"]
)
def test_lif_loss_falls_below_chance_on_real_speech(overrides):
    losses, data = _train_losses(overrides)
    counts = np.bincount(torch.cat([y for _, _, y in data]).numpy(), minlength=len(CLASSES))
    p = counts / counts.sum()
    entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    assert losses[-1] < math.log(len(CLASSES)) and losses[-1] < 0.8 * entropy, (losses, entropy)
    assert losses[-1] < losses[0]
