"""TransitionModel parsing: Kaldi's real yes/no model, and hand-made text/binary Triples/Tuples models."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from snnasr.io import DataError
from snnasr.kaldi.ark import read_vec_int_ark
from snnasr.kaldi.transition_model import read_transition_model

DATA = Path(__file__).parent / "data" / "kaldi_yesno"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "kaldi-yesno"
SIL, Y, N = 1, 2, 3  # Kaldi phone ids of data/lang/phones.txt


def transcripts() -> dict[str, list[str]]:
    lines = (DATA / "data" / "train_yesno" / "text").read_text().splitlines()
    return {line.split()[0]: line.split()[1:] for line in lines}


# ---------------------------------------------------------------- the real Kaldi model and alignments


@pytest.fixture(scope="module")
def yesno_model():
    return read_transition_model(DATA / "exp" / "mono" / "40.mdl")


def test_real_binary_model_matches_topology_arithmetic(yesno_model):
    m = yesno_model
    assert m.format == "Triples"
    assert m.phones == [SIL, Y, N]
    # data/lang/topo: SIL has 5 emitting states (4 x 4 arcs + 2 arcs), Y and N 3 states x 2 arcs.
    assert len(m.topology[SIL]) == 6 and len(m.topology[Y]) == 4
    assert m.topology[Y][0].transitions == ((0, pytest.approx(0.75)), (1, pytest.approx(0.25)))
    assert m.num_transition_ids == 18 + 6 + 6 == 30
    assert m.num_pdfs == 11
    assert list(m.tuples) == [(SIL, s, s, s) for s in range(5)] + [(Y, s, 5 + s, 5 + s) for s in range(3)] + [
        (N, s, 8 + s, 8 + s) for s in range(3)
    ]
    expected_pdf = [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 2 + [5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10]
    assert m.tid_pdf[1:].tolist() == expected_pdf
    assert m.tid_phone[1:].tolist() == [SIL] * 18 + [Y] * 6 + [N] * 6
    # SIL state s in 1..3 owns ids 4s+1..4s+4 for arcs to 1, 2, 3, 4, so its self-loop is 4s+s; states
    # 0 and 4 (and every Y/N state) list their self-loop first.
    assert np.flatnonzero(m.tid_self_loop).tolist() == [1, 5, 10, 15, 17, 19, 21, 23, 25, 27, 29]


def word_sequence(model, ali: np.ndarray) -> tuple[list[str], int, int]:
    """Non-silence phone instances as words; an instance restarts when the HMM state goes back."""
    phones, states = model.phones_per_frame(ali), model.tid_hmm_state[ali]
    starts = [
        i
        for i in range(len(ali))
        if i == 0 or phones[i] != phones[i - 1] or (phones[i] != SIL and states[i] < states[i - 1])
    ]
    words = [{Y: "YES", N: "NO"}[int(phones[i])] for i in starts if phones[i] != SIL]
    return words, int(phones[0]), int(phones[-1])


def test_real_alignments_read_as_the_transcripts(yesno_model):
    text = transcripts()
    alis = dict(read_vec_int_ark(DATA / "exp" / "mono" / "ali.1.gz"))
    assert sorted(alis) == sorted(text) and len(alis) == 31
    assert sum(len(a) for a in alis.values()) == 18996  # "over 18996 frames" in Kaldi's align.38.1.log
    for utt, ali in alis.items():
        words, first, last = word_sequence(yesno_model, ali)
        assert words == text[utt], utt
        assert first == SIL and last == SIL, utt
        pdfs = yesno_model.pdfs(ali)
        assert set(pdfs.tolist()) <= set(range(11))
        # monophone model: pdfs 0-4 are SIL, 5-7 Y, 8-10 N on every frame
        assert (np.array([SIL] * 5 + [Y] * 3 + [N] * 3)[pdfs] == yesno_model.phones_per_frame(ali)).all()


def mfcc_frames(wav: Path) -> int:
    """Frame count of Kaldi MFCC with the yes/no conf/mfcc.conf options."""
    import soundfile as sf
    import torch
    import torchaudio.compliance.kaldi as kaldi

    assert "--sample-frequency=8000" in (DATA / "conf" / "mfcc.conf").read_text()
    samples, rate = sf.read(str(wav), dtype="int16")
    feats = kaldi.mfcc(
        torch.from_numpy(samples.astype(np.float32))[None], sample_frequency=rate, use_energy=False, dither=0.0
    )
    return feats.shape[0]


def framing_frames(wav: Path) -> int:
    """Kaldi framing with snip-edges: 25 ms window, 10 ms shift (200 and 80 samples at 8 kHz)."""
    import soundfile as sf

    return 1 + (sf.info(str(wav)).frames - 200) // 80


def test_alignment_lengths_equal_mfcc_frames_of_the_copied_wavs():
    alis = dict(read_vec_int_ark(DATA / "exp" / "mono" / "ali.1.gz"))
    wavs = [w for w in sorted((DATA / "waves_yesno").glob("*.wav")) if w.stem in alis]
    assert len(wavs) == 2
    for wav in wavs:
        assert len(alis[wav.stem]) == mfcc_frames(wav) == framing_frames(wav)


def test_alignment_lengths_equal_feature_frames_of_all_31():
    """The framing formula, checked against MFCC above, keeps this quick on 31 recordings."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} absent: the full yes/no corpus is only in the shared data folder")
    alis = dict(read_vec_int_ark(DATA / "exp" / "mono" / "ali.1.gz"))
    for utt, ali in alis.items():
        assert len(ali) == framing_frames(SHARED / "waves_yesno" / f"{utt}.wav"), utt


def test_transition_id_outside_model_is_a_data_error(yesno_model):
    with pytest.raises(DataError, match=r"utt7: transition id 31 outside 1..30"):
        yesno_model.pdfs(np.array([1, 31]), where="utt7")
    with pytest.raises(DataError, match="transition id 0"):
        yesno_model.phones_per_frame(np.array([0]))


# ---------------------------------------------------------------- hand-made models

# Two phones, three emitting states with self-loops, and a final state.  Phone 2 lists its arcs
# forward-first, so the self-loop is found by destination, not by position.
ARCS = {
    1: [[(0, 0.5), (1, 0.5)], [(1, 0.5), (2, 0.5)], [(2, 0.5), (3, 0.5)], []],
    2: [[(1, 0.4), (0, 0.6)], [(1, 0.5), (2, 0.5)], [(2, 0.5), (3, 0.5)], []],
}
TUPLES = [(1, 0, 0, 1), (1, 1, 2, 3), (1, 2, 4, 5), (2, 0, 6, 7), (2, 1, 8, 9), (2, 2, 10, 11)]
TRIPLES = [(1, 0, 0), (1, 1, 1), (1, 2, 2), (2, 0, 3), (2, 1, 4), (2, 2, 5)]


def text_model(tuples: bool) -> str:
    out = ["<TransitionModel>", "<Topology>"]
    for phone, states in ARCS.items():
        out += ["<TopologyEntry>", "<ForPhones>", str(phone), "</ForPhones>"]
        for s, arcs in enumerate(states):
            if not arcs:
                out.append(f"<State> {s} </State>")
                continue
            pdf = f"<ForwardPdfClass> {s} <SelfLoopPdfClass> {s + 3}" if tuples else f"<PdfClass> {s}"
            out.append(f"<State> {s} {pdf} " + " ".join(f"<Transition> {d} {p}" for d, p in arcs) + " </State>")
        out.append("</TopologyEntry>")
    out.append("</Topology>")
    rows = TUPLES if tuples else TRIPLES
    tag = "Tuples" if tuples else "Triples"
    out += [f"<{tag}> {len(rows)}"] + [" ".join(map(str, r)) for r in rows] + [f"</{tag}>"]
    out += ["<LogProbs>", " [ 0 0 0 ]", "</LogProbs>", "</TransitionModel>", "<DIMENSION> 39 <NUMPDFS> 12"]
    return "\n".join(out) + "\n"


def binary_model(tuples: bool) -> bytes:
    """Serialise ARCS and TUPLES/TRIPLES as Kaldi's binary TransitionModel::Write would."""

    def tok(t: str) -> bytes:
        return t.encode() + b" "

    def i32(v: int) -> bytes:
        return b"\x04" + struct.pack("<i", v)

    def f32(v: float) -> bytes:
        return b"\x04" + struct.pack("<f", v)

    def ivec(vs: list[int]) -> bytes:
        return b"\x04" + struct.pack(f"<i{len(vs)}i", len(vs), *vs)

    out = b"\0B" + tok("<TransitionModel>") + tok("<Topology>") + ivec([1, 2]) + ivec([-1, 0, 1])
    out += (i32(-1) if tuples else b"") + i32(len(ARCS))
    for states in ARCS.values():
        out += i32(len(states))
        for s, arcs in enumerate(states):
            forward = s if arcs else -1
            out += i32(forward) + (i32(s + 3 if arcs else -1) if tuples else b"") + i32(len(arcs))
            out += b"".join(i32(d) + f32(p) for d, p in arcs)
    out += tok("</Topology>")
    rows = TUPLES if tuples else TRIPLES
    tag = "Tuples" if tuples else "Triples"
    out += tok(f"<{tag}>") + i32(len(rows)) + b"".join(i32(v) for r in rows for v in r) + tok(f"</{tag}>")
    return out + tok("<LogProbs>") + tok("FV") + i32(0) + tok("</LogProbs>") + tok("</TransitionModel>")


# transition id -> (phone, hmm_state, pdf, self-loop) worked out by hand from ARCS and TUPLES
TUPLES_BY_HAND = [
    (1, 0, 1, True),
    (1, 0, 0, False),
    (1, 1, 3, True),
    (1, 1, 2, False),
    (1, 2, 5, True),
    (1, 2, 4, False),
    (2, 0, 6, False),
    (2, 0, 7, True),
    (2, 1, 9, True),
    (2, 1, 8, False),
    (2, 2, 11, True),
    (2, 2, 10, False),
]


def write_model(tmp_path, binary: bool, tuples: bool):
    """The hand-made model as ``final.mdl``, in Kaldi's binary or text form."""
    path = tmp_path / "final.mdl"
    if binary:
        path.write_bytes(binary_model(tuples=tuples))
    else:
        path.write_text(text_model(tuples=tuples))
    return path


def table(m) -> list[tuple[int, int, int, bool]]:
    return [
        (int(m.tid_phone[t]), int(m.tid_hmm_state[t]), int(m.tid_pdf[t]), bool(m.tid_self_loop[t]))
        for t in range(1, m.num_transition_ids + 1)
    ]


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_tuples_model_self_loops_use_the_self_loop_pdf(tmp_path, binary):
    m = read_transition_model(write_model(tmp_path, binary, tuples=True))
    assert m.format == "Tuples"
    assert table(m) == TUPLES_BY_HAND
    assert m.num_transition_ids == 12 and m.num_pdfs == 12
    assert m.topology[2][0].self_loop_pdf_class == 3 and m.topology[2][3].transitions == ()
    ali = np.array([2, 1, 1, 4, 3, 6, 7, 8, 8, 10, 12])
    assert m.pdfs(ali).tolist() == [0, 1, 1, 2, 3, 4, 6, 7, 7, 8, 10]
    assert m.phones_per_frame(ali).tolist() == [1] * 6 + [2] * 5


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_triples_model_uses_one_pdf_per_state(tmp_path, binary):
    m = read_transition_model(write_model(tmp_path, binary, tuples=False))
    assert m.format == "Triples"
    by_hand = [(p, s, TRIPLES[(p - 1) * 3 + s][2], loop) for p, s, _pdf, loop in TUPLES_BY_HAND]
    assert table(m) == by_hand
    assert m.num_pdfs == 6


def test_binary_and_text_parse_alike(tmp_path):
    (tmp_path / "t.mdl").write_text(text_model(tuples=True))
    (tmp_path / "b.mdl").write_bytes(binary_model(tuples=True))
    t, b = read_transition_model(tmp_path / "t.mdl"), read_transition_model(tmp_path / "b.mdl")
    assert t.tuples == b.tuples and t.topology.keys() == b.topology.keys()
    for phone in t.topology:
        assert [s.transitions for s in t.topology[phone]] == [
            tuple((d, pytest.approx(p)) for d, p in s.transitions) for s in b.topology[phone]
        ]


@pytest.mark.parametrize(
    "content", [b"hello world\n", b"", b"\0BContextDependency \x04\x01\x00\x00\x00", bytes(range(256)) * 4]
)
def test_not_a_model_is_a_data_error(tmp_path, content):
    path = tmp_path / "tree"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"tree: not a Kaldi model \(no <TransitionModel>"):
        read_transition_model(path)


def test_truncated_and_corrupt_models_are_data_errors(tmp_path):
    data = (DATA / "exp" / "mono" / "40.mdl").read_bytes()
    (tmp_path / "cut.mdl").write_bytes(data[:300])
    with pytest.raises(DataError, match="cut.mdl: corrupt Kaldi TransitionModel .*unexpected end of file"):
        read_transition_model(tmp_path / "cut.mdl")
    (tmp_path / "bad.mdl").write_text(text_model(tuples=True).replace("<Tuples> 6", "<Quads> 6"))
    with pytest.raises(DataError, match=r"expected <Triples> or <Tuples>, got '<Quads>'"):
        read_transition_model(tmp_path / "bad.mdl")
    (tmp_path / "ghost.mdl").write_text(text_model(tuples=True).replace("2 2 10 11", "3 2 10 11"))
    with pytest.raises(DataError, match=r"transition state \(3, 2\) is not in the topology"):
        read_transition_model(tmp_path / "ghost.mdl")
    with pytest.raises(DataError, match="model not found"):
        read_transition_model(tmp_path / "none.mdl")
