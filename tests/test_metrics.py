import numpy as np
import pytest

from snnasr.lang import load_lang, write_lang
from snnasr.metrics import (
    EditCounts,
    collapse,
    edit_distance,
    frame_accuracy,
    phone_sequence,
    smooth_labels,
    total_edits,
)


def test_edit_distance_counts_each_error_type():
    assert edit_distance("abc", "abc") == EditCounts(0, 0, 0, 3)
    assert edit_distance("abc", "axc") == EditCounts(1, 0, 0, 3)
    assert edit_distance("abc", "ac") == EditCounts(0, 1, 0, 3)
    assert edit_distance("abc", "abxc") == EditCounts(0, 0, 1, 3)
    assert edit_distance("", "ab") == EditCounts(0, 0, 2, 0)
    assert edit_distance("ab", "") == EditCounts(0, 2, 0, 2)


def test_edit_distance_mixed_and_minimal():
    # kitten -> sitting: 2 substitutions (k->s, e->i) + 1 insertion (g): distance 3.
    e = edit_distance("kitten", "sitting")
    assert (e.substitutions, e.deletions, e.insertions, e.errors) == (2, 0, 1, 3)
    # Deletion and insertion at the two ends, on integer sequences.
    e = edit_distance([1, 2, 3, 4], [2, 3, 4, 5])
    assert (e.substitutions, e.deletions, e.insertions) == (0, 1, 1)


def test_edit_distance_matches_brute_force_on_random_sequences():
    rng = np.random.default_rng(0)

    def lev(a, b):
        d = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            prev, d[0] = d[0], i
            for j, y in enumerate(b, 1):
                prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
        return d[-1]

    for _ in range(50):
        a = rng.integers(0, 4, rng.integers(0, 9)).tolist()
        b = rng.integers(0, 4, rng.integers(0, 9)).tolist()
        e = edit_distance(a, b)
        assert e.errors == lev(a, b)
        # S + D = |ref| - matches and S + I = |hyp| - matches: the backtrace is a real alignment.
        assert len(a) - e.deletions == len(b) - e.insertions


def test_per_is_corpus_level_not_mean_of_rates():
    total = total_edits([("ab", "ab"), ("abcdefgh", "abcdefg")])
    assert total.ref_length == 10 and total.errors == 1
    assert total.rate == pytest.approx(0.1)
    assert np.isnan(EditCounts().rate)


def test_collapse_and_smoothing():
    assert collapse([1, 1, 2, 2, 2, 1, 3, 3]) == [1, 2, 1, 3]
    ids = np.array([1, 1, 1, 2, 1, 1, 3, 3, 3])
    assert smooth_labels(ids, 1).tolist() == ids.tolist()
    assert smooth_labels(ids, 3).tolist() == [1, 1, 1, 1, 1, 1, 3, 3, 3]


def test_frame_accuracy_excludes_unlabelled_frames():
    assert frame_accuracy(np.array([0, 1, 2, 3]), np.array([0, 1, -1, 0])) == (2, 3)
    # A prediction folded to "no label" is wrong, not excluded.
    assert frame_accuracy(np.array([-1, 1]), np.array([0, 1])) == (1, 2)


@pytest.fixture
def timit_like_lang(tmp_path):
    p61 = ["h#", "aa", "ao", "q", "bcl", "b", "pau"]
    p48 = ["sil", "aa", "ao", "vcl", "b"]
    p39 = ["sil", "aa", "b"]
    m61_48 = {"h#": "sil", "aa": "aa", "ao": "ao", "q": "-", "bcl": "vcl", "b": "b", "pau": "sil"}
    m48_39 = {"sil": "sil", "aa": "aa", "ao": "aa", "vcl": "sil", "b": "b"}
    m61_39 = {k: (m48_39[v] if v != "-" else "-") for k, v in m61_48.items()}
    write_lang(
        tmp_path / "lang",
        {"phone61": p61, "phone48": p48, "phone39": p39},
        default="phone48",
        score="phone39",
        silence=["sil"],
        segment_level="phone61",
        maps={("phone61", "phone48"): m61_48, ("phone61", "phone39"): m61_39, ("phone48", "phone39"): m48_39},
    )
    return load_lang(tmp_path / "lang")


def test_fold_61_and_48_to_39_then_phone_sequence(timit_like_lang):
    lang = timit_like_lang
    fold48 = lang.fold("phone48", "phone39")
    fold61 = lang.fold("phone61", "phone39")
    sil39 = lang.silence_ids("phone39")
    assert fold48.tolist() == [0, 1, 1, 0, 2]
    assert fold61.tolist() == [0, 1, 1, -1, 0, 2, 0]
    # 48-level frames: sil ao ao aa vcl b sil -> 39: (sil) aa aa aa (sil) b (sil) -> aa b
    frames48 = np.array([0, 2, 2, 1, 3, 4, 0])
    assert phone_sequence(frames48, fold48, sil39) == [1, 2]
    # 61-level: h# aa q aa bcl b pau: q is deleted, the two aa merge; closure and pauses are silence.
    frames61 = np.array([0, 1, 3, 1, 4, 5, 6])
    assert phone_sequence(frames61, fold61, sil39) == [1, 2]
    # Silence between two identical phones keeps both (Kaldi scoring after silence removal).
    assert phone_sequence(np.array([1, 0, 1]), fold48, sil39) == [1, 1]
    # Reference at the score level already: no fold, unlabelled frames skipped.
    assert phone_sequence(np.array([0, 1, -1, 1, 2]), None, sil39) == [1, 2]
