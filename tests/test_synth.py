"""The synthetic TIMIT: layout, determinism, audio formats, labels, voice checks, re-runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from snnasr.data import synth
from snnasr.io import ConfigError, DataError

SMALL = {"speakers": 5, "utts_per_speaker": 3, "seed": 7}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "timit"
    return out, synth.synthesize(out, **SMALL)


def _stems(root: Path) -> list[Path]:
    return sorted(p.with_suffix("") for p in root.rglob("*.WAV"))


def test_counts_and_ldc_layout(corpus):
    root, counts = corpus
    assert counts["speakers"] == 5 and counts["files"] == 5 * (3 + 2)
    assert (counts["train"], counts["dev"], counts["test"]) == (9, 3, 3)
    stems = _stems(root)
    assert len(stems) == counts["files"]
    for stem in stems:
        rel = stem.relative_to(root).as_posix()
        assert re.fullmatch(r"(TRAIN|TEST)/DR[1-8]/[MF][A-Z]{3}[0-9]/(SA[12]|SX\d+|SI\d+)", rel), rel
        for ext in (".PHN", ".WRD", ".TXT"):
            assert stem.with_suffix(ext).is_file()
    meta = yaml.safe_load((root / "synth.yaml").read_text())
    for spk in meta["speakers"]:
        top = "TRAIN" if spk["split"] == "train" else "TEST"
        assert (root / top / f"DR{spk['dialect']}" / spk["id"].upper() / "SA1.WAV").is_file()
    for split in ("dev", "test"):
        listed = (root / f"{split}_speakers.txt").read_text().split()
        assert listed == [s["id"] for s in meta["speakers"] if s["split"] == split] and len(listed) == 1
        assert all(i == i.lower() for i in listed)


def test_held_out_voices_and_texts_never_in_training(corpus):
    root, _ = corpus
    speakers = yaml.safe_load((root / "synth.yaml").read_text())["speakers"]
    train = [s for s in speakers if s["split"] == "train"]
    held = [s for s in speakers if s["split"] != "train"]
    assert {s["voice"] for s in train}.isdisjoint({s["voice"] for s in held})
    assert len({s["voice"] for s in speakers}) == len(speakers)
    texts = {
        split: {n for s in group for n in s["sentences"] if not n.startswith("SA")}
        for split, group in (("train", train), ("held", held))
    }
    assert texts["train"].isdisjoint(texts["held"])


def test_nist_and_riff_both_written_and_readable(corpus):
    root, _ = corpus
    kinds = {}
    for stem in _stems(root):
        wav = stem.with_suffix(".WAV")
        head = wav.read_bytes()[:8]
        kind = "NIST" if head.startswith(b"NIST_1A") else "RIFF" if head.startswith(b"RIFF") else "?"
        kinds.setdefault(kind, []).append(wav)
        info = sf.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert set(kinds) == {"NIST", "RIFF"}
    assert len(kinds["NIST"]) == 5  # every 5th of 25 files


def test_phn_wrd_txt_cover_the_audio(corpus):
    root, _ = corpus
    for stem in _stems(root):
        n = sf.info(str(stem.with_suffix(".WAV"))).frames
        phn = [line.split() for line in stem.with_suffix(".PHN").read_text().splitlines()]
        assert int(phn[0][0]) == 0 and int(phn[-1][1]) == n
        assert phn[0][2] == "h#" and phn[-1][2] == "h#"
        for (a, b, label), nxt in zip(phn, phn[1:] + [None]):
            assert int(a) < int(b) and label in synth.TIMIT61, (stem, a, b, label)
            assert nxt is None or int(nxt[0]) == int(b), stem
        txt = stem.with_suffix(".TXT").read_text().split(maxsplit=2)
        assert txt[:2] == ["0", str(n)]
        words = [line.split() for line in stem.with_suffix(".WRD").read_text().splitlines()]
        assert [w[2] for w in words] == [t[2] for t in synth._word_tokens(txt[2])]
        assert all(0 < int(a) < int(b) < n for a, b, _ in words)


def test_same_seed_same_bytes_and_rerun_is_a_noop(corpus, tmp_path):
    root, counts = corpus
    again = tmp_path / "again"
    assert synth.synthesize(again, **SMALL) == counts
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel
    before = {p: p.stat().st_mtime_ns for p in again.rglob("*")}
    assert synth.synthesize(again, **SMALL) == counts
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*")} == before


def test_other_seed_replaces_corpus_but_foreign_dir_is_refused(tmp_path):
    out = tmp_path / "c"
    synth.synthesize(out, speakers=3, utts_per_speaker=1, seed=1)
    first = (out / "synth.yaml").read_text()
    synth.synthesize(out, speakers=3, utts_per_speaker=1, seed=2)
    assert (out / "synth.yaml").read_text() != first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not made by `snnasr synth`"):
        synth.synthesize(foreign, speakers=3, utts_per_speaker=1)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_impossible_sizes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="--speakers"):
        synth.synthesize(tmp_path / "x", speakers=2)
    with pytest.raises(ConfigError, match="--utts-per-speaker"):
        synth.synthesize(tmp_path / "x", speakers=3, utts_per_speaker=10_000)
    assert not (tmp_path / "x").exists()


def test_unknown_variant_is_detected_as_silent_fallback():
    engine = synth.Espeak()
    with pytest.raises(DataError, match="plain en-us"):
        synth.check_voices(["en-us+no_such_variant"], engine)
    assert [v.name for v in synth.check_voices(["en-us+m3", "en-us+f2"], engine)] == ["en-us+m3", "en-us+f2"]
    usable = synth.usable_voices()
    assert len(usable) >= 20 and len({v.name for v in usable}) == len(usable)
    assert not {"en-us+whisper", "en-us+whisperf"} & {v.name for v in usable}


def test_every_espeak_label_is_mapped_to_timit61():
    """Fails loudly (DataError from segment) if espeak emits a label the table lacks."""
    engine = synth.Espeak()
    sentences = synth.harvard_sentences()
    assert len(sentences) == 720
    seen = set()
    for k, text in enumerate(sentences[::3]):
        spoken = engine.speak(text, "en-us", rate=130 if k % 2 else 210)
        phones, _ = synth.segment(spoken, text, f"sentence {3 * k + 1}")
        seen |= {p for _, _, p in phones}
        seen_raw = {synth.strip_stress(v) for kind, _, v in spoken.events if kind == "p"}
        assert seen_raw <= set(synth.phone_map())
    assert seen <= synth.TIMIT61 and len(seen) >= 40


def test_phone_table_targets_are_timit61_and_known_to_the_timit_maps():
    targets = {t for ts in synth.phone_map().values() for t in ts}
    assert targets <= synth.TIMIT61
    timit_map = Path(synth.__file__).resolve().parents[1] / "resources" / "phones.60-48-39.map"
    if timit_map.is_file():
        known = {
            line.split()[0] for line in timit_map.read_text().splitlines() if line.strip() and not line.startswith("#")
        }
        assert targets <= known


def test_espeak_output_depends_on_neither_history_nor_clock():
    """espeak keeps state across calls and seeds its noise from time(); both must be neutralised."""
    import time

    engine = synth.Espeak()
    text = synth.harvard_sentences()[10]
    first = engine.speak(text, "en-us+f5", rate=150, seed=3)
    engine.speak(synth.harvard_sentences()[11], "en-us+m3", rate=200)
    time.sleep(1.0 - time.time() % 1.0 + 0.05)  # cross a second boundary
    again = engine.speak(text, "en-us+f5", rate=150, seed=3)
    assert first.events == again.events and first.audio.tobytes() == again.audio.tobytes()
    assert engine.speak(text, "en-us+f5", rate=150, seed=4).audio.tobytes() != first.audio.tobytes()


@pytest.mark.parametrize("orig, new", [(22050, 16000), (16000, 8000), (8000, 16000)])
def test_resample_is_torchaudios_filter(orig, new):
    """The numpy resampler (kept for reproducibility, see its docstring) equals the library's."""
    import numpy as np
    import torch
    import torchaudio.functional as AF

    x = np.random.default_rng(0).normal(size=orig // 4)
    want = AF.resample(torch.from_numpy(x), orig, new).numpy()
    got = synth.resample(x, orig, new)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-12
