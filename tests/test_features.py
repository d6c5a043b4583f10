import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from snnasr import cli as cli_module
from snnasr.data.datadir import read_table, write_data_dir
from snnasr.features import FeatureOptions, add_deltas, cmvn_stats, extract, make_features
from snnasr.io import ConfigError, DataError
from snnasr.kaldi.ark import read_mat_scp, read_vec_int_scp
from snnasr.labels import num_frames
from snnasr.lang import write_lang

PHONES61 = ["h#", "aa", "s", "q", "pau"]


def make_recipe(
    root: Path, rate: int = 16000, seconds=(0.31, 0.25, 0.42, 0.2), segments: bool = True, set_name: str = "train"
) -> Path:
    """A tiny recipe: 2 speakers x 2 noisy utts, phone61/48/39 lang, contiguous segments with a q."""
    recipe = root / "recipe"
    write_lang(
        recipe / "data" / "lang",
        levels={"phone61": PHONES61, "phone48": ["sil", "aa", "s"], "phone39": ["aa", "s", "sil"]},
        default="phone48",
        score="phone39",
        silence=["sil"],
        segment_level="phone61",
        maps={
            ("phone61", "phone48"): {"h#": "sil", "aa": "aa", "s": "s", "q": "-", "pau": "sil"},
            ("phone61", "phone39"): {"h#": "sil", "aa": "aa", "s": "s", "q": "-", "pau": "sil"},
            ("phone48", "phone39"): {"sil": "sil", "aa": "aa", "s": "s"},
        },
    )
    rng = np.random.default_rng(0)
    wav, text, utt2spk, segs = {}, {}, {}, {}
    for i, sec in enumerate(seconds):
        spk = f"spk{i // 2}"
        utt = f"{spk}_u{i}"
        n = int(sec * rate)
        t = np.arange(n) / rate
        audio = (3000 * np.sin(2 * np.pi * (200 + 100 * i) * t) * (1 + i) + rng.normal(0, 300, n)).astype(np.int16)
        path = root / "audio" / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, rate, subtype="PCM_16")
        wav[utt], text[utt], utt2spk[utt] = str(path), "aa s", spk
        a, b, c = n // 4, n // 2, n // 2 + n // 10
        segs[utt] = [(0, a, "h#"), (a, b, "aa"), (b, c, "q"), (c, n - n // 8, "s"), (n - n // 8, n, "pau")]
    write_data_dir(recipe / "data" / set_name, wav, text, utt2spk, segs if segments else None)
    return recipe


def read_feats(data_dir: Path) -> dict[str, np.ndarray]:
    return dict(read_mat_scp(data_dir / "feats.scp"))


@pytest.mark.parametrize("rate", [16000, 8000])
@pytest.mark.parametrize("ftype, dim", [("fbank", 40), ("mfcc", 13)])
def test_extract_dims_and_frame_counts(rate, ftype, dim):
    n = int(0.337 * rate)
    samples = np.random.default_rng(1).normal(0, 1000, n).astype(np.float32)
    opts = FeatureOptions.load(None, ftype=ftype)
    feats = extract(samples, rate, opts)
    assert feats.shape == (num_frames(n, rate), dim) == (1 + (n - rate // 40) // (rate // 100), dim)
    assert np.isfinite(feats).all()
    with_deltas = extract(samples, rate, FeatureOptions.load(None, ftype=ftype, deltas=True))
    assert with_deltas.shape == (feats.shape[0], 3 * dim)
    np.testing.assert_allclose(with_deltas[:, :dim], feats, rtol=1e-6)


def test_mfcc_defaults_follow_kaldi_and_yesno_conf():
    opts = FeatureOptions.load(None, ftype="mfcc")
    assert (opts.num_bins, opts.num_ceps, opts.use_energy, opts.dither) == (23, 13, False, 0.0)
    assert FeatureOptions.load(None).num_bins == 40


def test_add_deltas_matches_kaldi_formula_by_hand():
    x = np.array([[1.0], [2.0], [4.0], [8.0]])
    d = add_deltas(x)
    # Kaldi: delta_t = sum_{j=-2..2} j * x[clamp(t+j)] / 10
    # t=0: (-2*1 -1*1 +1*2 +2*4)/10 = 0.7;  t=1: (-2*1 -1*1 +1*4 +2*8)/10 = 1.7
    # t=2: (-2*1 -1*2 +1*8 +2*8)/10 = 2.0;  t=3: (-2*2 -1*4 +1*8 +2*8)/10 = 1.6
    np.testing.assert_allclose(d[:, 1], [0.7, 1.7, 2.0, 1.6])
    # Second order = the delta kernel convolved with itself over the ORIGINAL frames (clamped):
    k2 = np.convolve(np.arange(-2, 3) / 10, np.arange(-2, 3) / 10)
    hand = [sum(w * x[min(max(t + j - 4, 0), 3), 0] for j, w in enumerate(k2)) for t in range(4)]
    np.testing.assert_allclose(d[:, 2], hand)
    assert d.shape == (4, 3)


def test_first_order_deltas_equal_torchaudio_compute_deltas():
    import torchaudio.functional as F

    x = np.random.default_rng(2).normal(size=(30, 5))
    ref = F.compute_deltas(torch.from_numpy(x.T.copy()), win_length=5).numpy().T
    np.testing.assert_allclose(add_deltas(x)[:, 5:10], ref, atol=1e-6)


def test_cmvn_stats_are_sums_sumsq_count():
    x = np.random.default_rng(3).normal(size=(7, 3))
    s = cmvn_stats(x)
    assert s.shape == (2, 4) and s.dtype == np.float64
    np.testing.assert_allclose(s[0, :3], x.sum(0))
    np.testing.assert_allclose(s[1, :3], (x**2).sum(0))
    assert s[0, 3] == 7 and s[1, 3] == 0


def test_make_features_writes_every_output(tmp_path):
    recipe = make_recipe(tmp_path)
    data = recipe / "data" / "train"
    counts = make_features(data, FeatureOptions.load(None))
    feats = read_feats(data)
    utts = list(read_table(data / "wav.scp"))
    assert list(feats) == utts
    u2n = read_table(data / "utt2num_frames")
    for utt, mat in feats.items():
        n = sf.info(read_table(data / "wav.scp")[utt]).frames
        assert mat.shape == (num_frames(n, 16000), 40) == (int(u2n[utt]), 40)
    assert counts == {
        "utterances": 4,
        "dropped": 0,
        "frames": sum(len(m) for m in feats.values()),
        "dim": 40,
        "labelled": 4,
    }
    # speaker CMVN stats equal the numpy sums over each speaker's utterances
    stats = dict(read_mat_scp(data / "cmvn.scp"))
    assert sorted(stats) == ["spk0", "spk1"]
    spk0 = np.concatenate([feats["spk0_u0"], feats["spk0_u1"]]).astype(np.float64)
    assert stats["spk0"].dtype == np.float64
    np.testing.assert_allclose(stats["spk0"][0, :-1], spk0.sum(0), rtol=1e-6)
    np.testing.assert_allclose(stats["spk0"][1, :-1], (spk0**2).sum(0), rtol=1e-6)
    assert stats["spk0"][0, -1] == len(spk0)
    assert (data / "frame_shift").read_text().strip() == "0.01"
    state = yaml.safe_load((data / "conf" / "features.yaml").read_text())
    assert state["cmvn"] == "speaker" and state["sample_rate"] == 16000 and state["dim"] == 40
    assert state["frame_shift"] == 0.01 and state["options"]["ftype"] == "fbank" and len(state["hash"]) == 16
    # labels for every level, one per frame; q (at n/2 .. n/2+n/10) labelled "aa"
    for level in ("phone61", "phone48", "phone39"):
        lab = dict(read_vec_int_scp(data / f"labels_{level}.scp"))
        assert {u: len(v) for u, v in lab.items()} == {u: len(m) for u, m in feats.items()}
    lab61 = dict(read_vec_int_scp(data / "labels_phone61.scp"))["spk0_u0"]
    assert PHONES61.index("q") not in lab61
    n = int(0.31 * 16000)
    q_frame = (n // 2 + n // 20 - 200) // 160  # centre inside the q segment
    assert lab61[q_frame] == PHONES61.index("aa")
    assert lab61[0] == PHONES61.index("h#") and lab61[-1] == PHONES61.index("pau")


def test_utt_cmvn_keys_and_none_removes_stats(tmp_path):
    data = make_recipe(tmp_path, segments=False) / "data" / "train"
    make_features(data, FeatureOptions.load(None, cmvn="utt"))
    stats = dict(read_mat_scp(data / "cmvn.scp"))
    feats = read_feats(data)
    assert list(stats) == list(feats)
    for utt, mat in feats.items():
        assert stats[utt][0, -1] == len(mat)
    assert not list(data.glob("labels_*"))
    make_features(data, FeatureOptions.load(None, cmvn="none"))
    assert not (data / "cmvn.scp").exists() and not (data / "cmvn.ark").exists()


def test_8khz_mfcc_with_deltas(tmp_path):
    data = make_recipe(tmp_path, rate=8000) / "data" / "train"
    counts = make_features(data, FeatureOptions.load(None, ftype="mfcc", deltas=True))
    assert counts["dim"] == 39
    for mat in read_feats(data).values():
        assert mat.shape[1] == 39
    assert yaml.safe_load((data / "conf" / "features.yaml").read_text())["sample_rate"] == 8000


def test_rerun_skips_and_changed_options_recompute(tmp_path, capsys):
    data = make_recipe(tmp_path) / "data" / "train"
    opts = FeatureOptions.load(None)
    make_features(data, opts)
    before = (data / "feats.ark").stat().st_mtime_ns
    capsys.readouterr()
    make_features(data, opts)
    assert "up to date" in capsys.readouterr().err
    assert (data / "feats.ark").stat().st_mtime_ns == before
    make_features(data, FeatureOptions.load(None, num_bins=23))
    assert next(iter(read_feats(data).values())).shape[1] == 23
    # labels alone are redone when the segments change
    segs = (data / "phone_segments").read_text().replace(" aa", " pau")
    (data / "phone_segments").write_text(segs)
    feats_mtime = (data / "feats.ark").stat().st_mtime_ns
    make_features(data, FeatureOptions.load(None, num_bins=23))
    assert (data / "feats.ark").stat().st_mtime_ns == feats_mtime
    lab = dict(read_vec_int_scp(data / "labels_phone61.scp"))
    assert all(PHONES61.index("aa") not in v for v in lab.values())


def test_jobs_2_gives_identical_archives(tmp_path):
    data = make_recipe(tmp_path) / "data" / "train"
    opts = FeatureOptions.load(None, dither=1.0)
    make_features(data, opts, jobs=1)
    one = {p: (data / p).read_bytes() for p in ("feats.ark", "cmvn.ark", "labels_phone48.ark", "utt2num_frames")}
    (data / "conf" / "features.yaml").unlink()
    make_features(data, opts, jobs=2)
    assert {p: (data / p).read_bytes() for p in one} == one


def test_label_length_mismatch_names_the_utterance(tmp_path):
    data = make_recipe(tmp_path) / "data" / "train"
    lines = (data / "phone_segments").read_text().splitlines()
    last = [i for i, line in enumerate(lines) if line.startswith("spk1_u2 ")][-1]
    utt, start, end, ph = lines[last].split()
    lines[last] = f"{utt} {start} {int(end) + 16000} {ph}"
    (data / "phone_segments").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="spk1_u2: the segments run 1.00 s past the end of the audio .*'pau'"):
        make_features(data, FeatureOptions.load(None), strict=True)
    assert not (data / "conf" / "features.yaml").exists()


def test_mixed_sample_rates_are_rejected(tmp_path):
    data = make_recipe(tmp_path) / "data" / "train"
    path = read_table(data / "wav.scp")["spk1_u3"]
    sf.write(path, np.zeros(4000, dtype=np.int16), 8000, subtype="PCM_16")
    with pytest.raises(DataError, match="mixed sample rates"):
        make_features(data, FeatureOptions.load(None))


def test_yaml_overrides_defaults_and_cli_overrides_yaml(tmp_path):
    conf = tmp_path / "fbank.yaml"
    conf.write_text("type: mfcc\nnum-ceps: 20\ndither: 0.5\n")
    opts = FeatureOptions.load(conf, num_ceps=15)
    assert (opts.ftype, opts.num_bins, opts.num_ceps, opts.dither) == ("mfcc", 23, 15, 0.5)
    conf.write_text("num_bin: 20\n")
    with pytest.raises(ConfigError, match="unknown feature option 'num_bin'"):
        FeatureOptions.load(conf)
    conf.write_text("deltas: 3\n")
    with pytest.raises(ConfigError, match="deltas: expected bool"):
        FeatureOptions.load(conf)


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["snnasr", *args])
    with pytest.raises(SystemExit) as e:
        cli_module.main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_config_file_and_explicit_option(tmp_path, monkeypatch, capsys):
    recipe = make_recipe(tmp_path, segments=False)
    conf = tmp_path / "mfcc.yaml"
    conf.write_text("type: mfcc\ncmvn: utt\n")
    code, out, _ = run_cli(
        monkeypatch, capsys, "features", "--sets", "train", "--config", str(conf), "--cmvn", "none", "-d", str(recipe)
    )
    assert code == 0 and "data/train: utterances 4" in out and "dim 13" in out
    state = yaml.safe_load((recipe / "data" / "train" / "conf" / "features.yaml").read_text())
    assert (state["type"], state["cmvn"]) == ("mfcc", "none")


@pytest.mark.parametrize(
    "breakage, words",
    [
        ("empty", "spk0_u1: .*audio is empty"),
        ("short", "spk0_u1: audio has 100 samples, shorter than one 25 ms window"),
        ("missing", "data dir not found"),
    ],
)
def test_cli_bad_input_is_one_line_without_traceback(tmp_path, monkeypatch, capsys, breakage, words):
    recipe = make_recipe(tmp_path)
    data = recipe / "data" / "train"
    path = read_table(data / "wav.scp")["spk0_u1"]
    if breakage == "empty":
        sf.write(path, np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    elif breakage == "short":
        sf.write(path, np.zeros(100, dtype=np.int16), 16000, subtype="PCM_16")
    sets = "dev" if breakage == "missing" else "train"
    code, _, err = run_cli(monkeypatch, capsys, "features", "--sets", sets, "-d", str(recipe))
    assert code == 1
    lines = [line for line in err.strip().splitlines() if ": warning: dropped " not in line]
    assert len(lines) == 1 and lines[0].startswith("snnasr features: ")
    assert "Traceback" not in err
    import re

    assert re.search(words, lines[0])
    assert not (data / "conf" / "features.yaml").exists()


def test_bad_segments_fail_before_any_audio_is_read(tmp_path):
    data = make_recipe(tmp_path) / "data" / "train"
    text = (data / "phone_segments").read_text().replace("spk0_u1 0 ", "spk0_u1 7 ", 1)
    (data / "phone_segments").write_text(text.replace(" s\n", " zz\n", 1))
    with pytest.raises(DataError, match="spk0_u0: segment .* unknown symbol 'zz'"):
        make_features(data, FeatureOptions.load(None))
    assert not (data / "feats.ark").exists()
