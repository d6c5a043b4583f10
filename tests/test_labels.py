import re

import numpy as np
import pytest

from snnasr import labels as L
from snnasr.io import DataError
from snnasr.kaldi.ark import read_vec_int_scp
from snnasr.lang import load_lang, write_lang

# 1 kHz makes the framing easy to compute by hand: window 25 samples, shift 10, centre 10*i + 12.
RATE = 1000


def test_num_frames_follows_kaldi_snip_edges_formula():
    assert L.num_frames(400, 16000) == 1
    assert L.num_frames(399, 16000) == 0
    assert L.num_frames(16000, 16000) == 1 + (16000 - 400) // 160 == 98
    assert L.num_frames(8000, 8000) == 1 + (8000 - 200) // 80 == 98
    assert L.num_frames(60, RATE) == 4
    assert L.window_samples(22050) == (551, 220)


def test_centre_rule_with_q_in_the_middle_goes_to_the_preceding_segment():
    segs = [(0, 20, "h#"), (20, 30, "aa"), (30, 36, "q"), (36, 60, "s")]
    # centres 12 22 32 42 52: 32 lies in q, which belongs to "aa"; frame 4 (centre 52) is past N.
    assert L.frame_labels_from_segments(segs, 5, RATE) == ["h#", "aa", "aa", "s", "s"]


def test_leading_q_goes_to_the_following_segment():
    segs = [(0, 15, "q"), (15, 40, "aa"), (40, 60, "s")]
    assert L.frame_labels_from_segments(segs, 4, RATE) == ["aa", "aa", "aa", "s"]


def test_centre_exactly_on_a_boundary_takes_the_later_segment():
    segs = [(0, 12, "a"), (12, 60, "b")]  # centre of frame 0 is sample 12 = start of "b"
    assert L.frame_labels_from_segments(segs, 2, RATE) == ["b", "b"]


@pytest.mark.parametrize(
    "segs, words",
    [
        ([(0, 20, "a"), (25, 60, "b")], "gap"),
        ([(0, 20, "a"), (15, 60, "b")], "overlaps"),
        ([(0, 20, "a"), (20, 10, "b")], "ends before it starts"),
        ([(-5, 20, "a"), (20, 60, "b")], "negative"),
        ([(0, 20, "a"), (20, 60, "zz")], "unknown symbol 'zz'"),
        ([], "no phone segments"),
    ],
)
def test_bad_segments_name_the_utterance(segs, words):
    with pytest.raises(DataError, match=words) as e:
        L.validate_segments("spk1_utt7", segs, symbols={"a", "b"})
    assert str(e.value).startswith("spk1_utt7:")


def test_only_q_is_an_error():
    with pytest.raises(DataError, match="u1: only q"):
        L.frame_labels_from_segments([(0, 60, "q")], 4, RATE, uttid="u1")


def test_match_length_pads_truncates_and_rejects():
    lab = np.array([1, 2, 3])
    assert L.match_length("u", lab, 5).tolist() == [1, 2, 3, 3, 3]
    assert L.match_length("u", lab, 2).tolist() == [1, 2]
    with pytest.raises(DataError, match="u9: labels cover 3 frames but the features have 6"):
        L.match_length("u9", lab, 6)
    L.check_lengths("u", 10, 13, tolerance=3)


def test_write_label_levels_maps_every_level(tmp_path):
    lang = load_lang(
        write_lang(
            tmp_path / "lang",
            levels={"phone61": ["h#", "aa", "q", "pau"], "phone48": ["sil", "aa"], "phone39": ["aa", "sil"]},
            default="phone48",
            score="phone39",
            silence=["sil"],
            segment_level="phone61",
            maps={
                ("phone61", "phone48"): {"h#": "sil", "aa": "aa", "q": "-", "pau": "sil"},
                ("phone61", "phone39"): {"h#": "sil", "aa": "aa", "q": "-", "pau": "sil"},
            },
        )
    )
    counts = L.write_label_levels(tmp_path, lang, {"u2": ["pau", "aa"], "u1": ["h#", "aa", "aa"]})
    assert counts == {"phone61": 2, "phone48": 2, "phone39": 2}
    got = {lv: {k: v.tolist() for k, v in read_vec_int_scp(tmp_path / f"labels_{lv}.scp")} for lv in counts}
    assert got["phone61"] == {"u1": [0, 1, 1], "u2": [3, 1]}
    assert got["phone48"] == {"u1": [0, 1, 1], "u2": [0, 1]}
    assert got["phone39"] == {"u1": [1, 0, 0], "u2": [1, 0]}
    assert list(got["phone61"]) == ["u1", "u2"]  # sorted by uttid
    with pytest.raises(DataError, match="u3: symbol 'q' has no label at level phone48"):
        L.write_label_levels(tmp_path, lang, {"u3": ["q"]})


def test_fit_to_audio_stretches_edge_silence_within_the_limit():
    segs = [(160, 4000, "h#"), (4000, 9000, "aa"), (9000, 12000, "h#")]
    # starts 10 ms late and ends 0.25 s early: both edges are h#, within 0.5 s
    assert L.fit_to_audio("u", segs, 16000, 16000) == [(0, 4000, "h#"), (4000, 9000, "aa"), (9000, 16000, "h#")]
    # ends 0.1 s past the audio: the h# is clipped
    assert L.fit_to_audio("u", segs, 10400, 16000)[-1] == (9000, 10400, "h#")
    assert L.fit_to_audio("u", [(0, 100, "sil"), (100, 800, "one")], 800, 8000) == [(0, 100, "sil"), (100, 800, "one")]


@pytest.mark.parametrize(
    "segs, n, words",
    [
        ([(0, 4000, "h#"), (4000, 9000, "aa"), (9000, 12000, "h#")], 21000, "0.56 s of audio after the last segment"),
        ([(9000, 12000, "h#"), (12000, 16000, "aa")], 16000, "0.56 s of audio before the first segment"),
        ([(0, 4000, "h#"), (4000, 9000, "aa")], 10000, "next to the last segment 'aa', which is not silence"),
        ([(0, 4000, "h#"), (4000, 9000, "aa")], 8000, "run 0.06 s past the end of the audio"),
    ],
)
def test_fit_to_audio_refuses_what_is_not_edge_silence(segs, n, words):
    with pytest.raises(DataError, match=re.escape(words)):
        L.fit_to_audio("u", segs, n, 16000)
