import numpy as np
import pytest
import torch
from test_features import make_recipe

from snnasr.data.datadir import read_table
from snnasr.dataset import UtteranceDataset, apply_cmvn, splice
from snnasr.features import FeatureOptions, cmvn_stats, make_features
from snnasr.io import DataError
from snnasr.kaldi.ark import read_vec_int_scp, write_vec_int_ark_scp


@pytest.fixture
def data(tmp_path):
    d = make_recipe(tmp_path) / "data" / "train"
    make_features(d, FeatureOptions.load(None))
    return d


def test_items_attributes_and_speaker_cmvn(data):
    ds = UtteranceDataset(data)
    assert ds.level == "phone48" and ds.num_classes == 3 and ds.dim == 40
    assert ds.uttids == sorted(read_table(data / "wav.scp")) and len(ds) == 4
    utt, feats, labels = ds[0]
    assert utt == ds.uttids[0] and feats.dtype == torch.float32 and labels.dtype == torch.int64
    assert feats.shape == (ds.lengths[0], 40) and labels.shape == (ds.lengths[0],)
    spk = read_table(data / "utt2spk")
    for speaker in ("spk0", "spk1"):
        rows = torch.cat([ds[i][1] for i, u in enumerate(ds.uttids) if spk[u] == speaker])
        assert rows.mean(0).abs().max() < 1e-3  # per-speaker mean removed
        assert rows.std(0).min() > 0.01
    assert ds[1][1].mean(0).abs().max() > 1e-2  # per-utterance means are not zero with speaker CMVN


def test_norm_vars_and_utt_cmvn(data):
    make_features(data, FeatureOptions.load(None, cmvn="utt"))
    ds = UtteranceDataset(data, norm_vars=True, level="phone39")
    assert ds.num_classes == 3 and ds.level == "phone39"
    for _, feats, _ in ds:
        f = feats.double()
        assert f.mean(0).abs().max() < 1e-4
        np.testing.assert_allclose(f.var(0, unbiased=False).numpy(), 1.0, atol=1e-3)


def test_apply_cmvn_matches_kaldi_formula():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4))
    s = cmvn_stats(x)
    np.testing.assert_allclose(apply_cmvn(x, s), x - x.mean(0), atol=1e-5)
    np.testing.assert_allclose(apply_cmvn(x, s, norm_vars=True), (x - x.mean(0)) / x.std(0), atol=1e-4)


def test_context_splicing_replicates_edges(data):
    x = torch.arange(8.0).reshape(4, 2)
    s = splice(x, 1)
    assert s.shape == (4, 6)
    assert s[0].tolist() == [0, 1, 0, 1, 2, 3] and s[3].tolist() == [4, 5, 6, 7, 6, 7]
    ds = UtteranceDataset(data, context=2)
    assert ds.dim == 200 and ds[0][1].shape == (ds.lengths[0], 200)
    plain = UtteranceDataset(data)
    torch.testing.assert_close(ds[0][1][:, 80:120], plain[0][1])  # centre frame in the middle


def test_missing_features_level_and_labels(tmp_path, capsys):
    d = make_recipe(tmp_path) / "data" / "train"
    with pytest.raises(DataError, match="run `snnasr features`"):
        UtteranceDataset(d)
    make_features(d, FeatureOptions.load(None))
    with pytest.raises(DataError, match="level 'pdf' unknown; this recipe has phone61, phone48, phone39"):
        UtteranceDataset(d, level="pdf")
    (d / "labels_phone39.scp").unlink()
    with pytest.raises(DataError, match="no frame labels of level 'phone39'; this set has phone48, phone61"):
        UtteranceDataset(d, level="phone39")
    # an utterance without labels is skipped with a warning
    labels = dict(read_vec_int_scp(d / "labels_phone48.scp"))
    dropped = labels.pop("spk1_u2")
    write_vec_int_ark_scp(labels.items(), d / "labels_phone48.ark", d / "labels_phone48.scp")
    ds = UtteranceDataset(d)
    assert "spk1_u2" not in ds.uttids and ds.skipped == 1 and len(ds) == 3
    assert "1 utterances without labels_phone48 skipped" in capsys.readouterr().err
    # labels too long by more than the tolerance: error naming the utterance
    labels["spk0_u1"] = np.concatenate([labels["spk0_u1"], np.zeros(5, dtype=np.int32)])
    labels["spk1_u2"] = dropped[:-2]  # within tolerance: padded
    write_vec_int_ark_scp(labels.items(), d / "labels_phone48.ark", d / "labels_phone48.scp")
    with pytest.raises(DataError, match="spk0_u1: labels_phone48 cover"):
        UtteranceDataset(d)
    labels["spk0_u1"] = labels["spk0_u1"][:-5]
    write_vec_int_ark_scp(labels.items(), d / "labels_phone48.ark", d / "labels_phone48.scp")
    ds = UtteranceDataset(d)
    i = ds.uttids.index("spk1_u2")
    assert ds[i][2].tolist() == dropped[:-2].tolist() + [dropped[-3]] * 2


def _in_memory_corpus(data_dir, context, norm_vars):
    """The path this streaming replaced: every utterance read, normalised and spliced up front."""
    from snnasr.kaldi.ark import read_mat_scp

    stats = dict(read_mat_scp(data_dir / "cmvn.scp"))
    spk = read_table(data_dir / "utt2spk")
    labels = dict(read_vec_int_scp(data_dir / "labels_phone48.scp"))
    out = []
    for utt, feats in read_mat_scp(data_dir / "feats.scp"):
        x = torch.from_numpy(apply_cmvn(feats, stats[spk[utt]], norm_vars))
        out.append((splice(x, context), torch.from_numpy(labels[utt][: len(feats)].astype(np.int64))))
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_batches_equal_the_in_memory_ones(data, workers):
    """Same seed, same minibatches, bit for bit: pieces cut mid-utterance get their spliced
    context from the neighbouring frames and CMVN from the speaker, as in the whole utterance."""
    from snnasr.batching import BucketBatchSampler, batch_loader, epoch_plan

    ds = UtteranceDataset(data, context=2, norm_vars=True)
    corpus = _in_memory_corpus(data, 2, True)
    assert ds.lengths == [len(x) for x, _ in corpus]
    plan = epoch_plan(ds.lengths, 7, 40, seed=11, batch_size=3)  # pieces of 7..8 frames: many cuts
    assert any(start > 0 for b in plan for _, start, _ in b)
    batches = list(batch_loader(ds, BucketBatchSampler(plan), workers=workers))
    assert len(batches) == len(plan)
    for pieces, b in zip(plan, batches):
        want_x = torch.nn.utils.rnn.pad_sequence([corpus[u][0][s:e] for u, s, e in pieces])
        want_y = torch.nn.utils.rnn.pad_sequence([corpus[u][1][s:e] for u, s, e in pieces], padding_value=-1)
        assert torch.equal(b.x, want_x) and torch.equal(b.y, want_y)
        assert torch.equal(b.mask, want_y >= 0)


def test_dataset_keeps_only_an_index(data):
    """No features in memory: an item is read from the ark when asked for, so a changed ark
    shows at once (and a vanished one is a one-line error naming the scp line)."""
    ds = UtteranceDataset(data)
    assert not any(isinstance(v, (np.ndarray, torch.Tensor)) for v in vars(ds).values())
    (data / "feats.ark").rename(data / "moved.ark")
    with pytest.raises(DataError, match=r"feats\.scp:1: .*feats\.ark not found"):
        ds[0]
