"""The embedded default corpus: a synthetic TIMIT made with espeak-ng, so nothing is downloaded.

``synthesize(out)`` writes the LDC layout that ``snnasr prep timit`` reads::

    OUT/TRAIN/DR<d>/<SPKR>/<SENT>.WAV  (+ .PHN .WRD .TXT)   training speakers
    OUT/TEST/DR<d>/<SPKR>/...                              dev and test speakers
    OUT/dev_speakers.txt  OUT/test_speakers.txt             lower-case speaker ids, one a line
    OUT/synth.yaml                                          options, speakers, counts (written last)

Audio is 16 kHz 16-bit mono; every 5th file (in sorted order) is NIST SPHERE, the rest RIFF,
so both reader paths are exercised.  ``.PHN`` holds ``start end phone`` in samples covering the
whole file from ``h#`` to ``h#`` in the TIMIT 61-label set (map: resources/espeak_timit61.tsv),
``.WRD`` the words (span of their phones), ``.TXT`` ``0 <num_samples> <sentence>``.

One speaker = one espeak voice (plain ``en-us`` or ``en-us+<variant>``) with its own rate
(130-210 wpm), pitch, pitch range and white-noise SNR (20-30 dB); utterances jitter around
these.  Dev and test speakers are voices never heard in training: within one voice espeak is
nearly deterministic, so only held-out voices make an honest test.  Texts are the Harvard
sentences; every speaker also reads SA1/SA2 (sentences 1 and 2), which prep drops as for
TIMIT; dev/test speakers read other sentences than training speakers.

Why a fresh copy of the library per utterance: libespeak-ng keeps state across calls that
``espeak_Terminate``/``espeak_Initialize`` do not reset (e.g. the pitch-flutter index), so the
same text with the same voice gives different samples depending on what was spoken before.
Unloading and reloading the library (``dlclose``) restores its initial state (~5 ms), and its
noise generator (seeded from the clock by espeak_Initialize) is re-seeded; this makes every
utterance a pure function of its settings: deterministic, order-free, and
comparable bit for bit, which is how silently-substituted voices are detected.

Why a ctypes binding of our own rather than a Python espeak package: the labels need
libespeak-ng's synthesis callback with phoneme events and their sample positions, and the
determinism above needs the library unloaded and reloaded per utterance.  ``espeakng`` (PyPI)
runs the ``espeak-ng`` command-line program (not installed by any wheel, no phoneme positions);
``espeak-ng-python`` is a C extension built from source against a system libespeak-ng (no
wheel), so it can neither use the library that ``espeakng-loader`` ships nor be reloaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from tqdm import tqdm

from snnasr.io import ConfigError, DataError

RATE = 16000
GENERATOR = "snnasr-synth-1"  # bump when the output for the same options changes
DEFAULT_UTTS_PER_SPEAKER = 10
HELD_OUT_FRACTION = 0.1  # of the speakers, for dev and again for test
TEST_TEXT_FRACTION = 0.2  # of the SX/SI sentences, read only by dev/test speakers
NIST_EVERY = 5
PROBE_TEXT = "The quick brown fox jumps over the lazy dog, then rests."
# Variants that exist and differ but are not speech a TIMIT speaker could produce.
EXCLUDED_VARIANTS = {
    "whisper": "unvoiced (no pitch at all)",
    "whisperf": "unvoiced (no pitch at all)",
}
TIMIT61 = frozenset(
    "aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f g gcl h# hh hv "
    "ih ix iy jh k kcl l m n ng nx ow oy p pau pcl q r s sh t tcl th uh uw ux v w y z zh".split()
)
PAUSE = "pau"
EDGE = "h#"

# espeak-ng API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 1
_POS_CHARACTER = 1
_EV_LIST_TERMINATED, _EV_WORD, _EV_PHONEME = 0, 1, 7
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Spoken:
    """espeak output at its own rate: samples, and events in emission order.

    ``events`` holds ``("w", sample, text_position)`` for words (1-based character position)
    and ``("p", sample, label)`` for phonemes (stress marks still attached).
    """

    audio: np.ndarray
    rate: int
    events: tuple[tuple[str, int, int | str], ...]


class Espeak:
    """libespeak-ng through ctypes, reloaded for every utterance (see the module docstring)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise DataError(
                "espeakng-loader is not installed; `pip install espeakng-loader` (it ships libespeak-ng and its data)"
            ) from None
        self._lib_path = espeakng_loader.get_library_path()
        self._data_path = espeakng_loader.get_data_path().encode()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int, int | str]] = []
        self._callback = _CALLBACK(self._on_audio)  # kept alive as long as self

    @property
    def variants_dir(self) -> Path:
        return Path(self._data_path.decode()) / "voices" / "!v"

    def _on_audio(self, wav, n: int, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EV_PHONEME:
                self._events.append(("p", ev.sample, ev.id.string.decode("utf-8", "replace")))
            elif ev.type == _EV_WORD:
                self._events.append(("w", ev.sample, ev.text_position))
            i += 1
        return 0

    def speak(
        self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50, seed: int = 1
    ) -> Spoken:
        """Synthesise ``text`` from the library's initial state; DataError if espeak refuses the voice.

        The library is loaded for this call only and unloaded before returning, so no handle
        outlives it (a second handle would keep the state alive across calls).  ``seed`` feeds
        espeak's own noise generator, which espeak_Initialize would seed from the clock.
        """
        import _ctypes

        lib = ctypes.CDLL(self._lib_path)
        try:
            lib.espeak_Synth.argtypes = [
                ctypes.c_char_p,
                ctypes.c_size_t,
                ctypes.c_uint,
                ctypes.c_int,
                ctypes.c_uint,
                ctypes.c_uint,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, _INIT_PHONEME_EVENTS)
            if sample_rate <= 0:
                raise DataError(
                    f"{self._lib_path}: espeak_Initialize failed ({sample_rate}); reinstall espeakng-loader"
                )
            lib.espeak_SetSynthCallback(self._callback)
            lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))  # Initialize seeds it from time(NULL)
            rc = lib.espeak_SetVoiceByName(voice.encode())
            if rc != 0:
                raise DataError(
                    f"espeak-ng voice {voice!r}: refused (status {rc}); use en-us or an "
                    f"en-us+<variant> from {self.variants_dir}"
                )
            for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range)):
                lib.espeak_SetParameter(param, int(value), 0)
            self._chunks, self._events = [], []
            data = text.encode()
            lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
            lib.espeak_Synchronize()
            lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return Spoken(audio, sample_rate, tuple(self._events))


# ---------------------------------------------------------------------------------------------
# resources


def _resource(name: str) -> str:
    return (resources.files("snnasr") / "resources" / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def harvard_sentences() -> tuple[str, ...]:
    """The 720 Harvard sentences; index i is sentence number i + 1."""
    return tuple(
        line.strip()
        for line in _resource("harvard_sentences.txt").splitlines()
        if line.strip() and not line.startswith("#")
    )


@lru_cache(maxsize=1)
def phone_map() -> dict[str, tuple[str, ...]]:
    """espeak label (stress stripped) -> one or two TIMIT-61 labels, from espeak_timit61.tsv."""
    table: dict[str, tuple[str, ...]] = {}
    for n, line in enumerate(_resource("espeak_timit61.tsv").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        targets = tuple(fields[1].split()) if len(fields) > 1 else ()
        if not targets or any(t not in TIMIT61 for t in targets) or fields[0] in table:
            raise DataError(
                f"snnasr/resources/espeak_timit61.tsv:{n}: bad row {line!r}; need "
                f"'<espeak label><TAB><TIMIT-61 label(s)><TAB><note>', each label once"
            )
        table[fields[0]] = targets
    return table


def strip_stress(label: str) -> str:
    return label.replace("'", "").replace(",", "")


def sentence_name(index: int) -> str:
    """TIMIT-style name of Harvard sentence ``index`` (0-based): SA1, SA2, SX3..SX452, SI453..."""
    number = index + 1
    if number <= 2:
        return f"SA{number}"
    return f"SX{number}" if number <= 452 else f"SI{number}"


# ---------------------------------------------------------------------------------------------
# voices


@dataclass(frozen=True)
class Voice:
    name: str  # what espeak_SetVoiceByName gets: en-us or en-us+<variant>
    sex: str  # m or f, from the variant's gender line (plain en-us is male)


def _variant_sex(path: Path) -> str:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].lower() == "gender":
            return "f" if words[1].lower().startswith("f") else "m"
    return "m"


def _probe_digest(engine: Espeak, voice: str) -> str:
    return hashlib.sha1(engine.speak(PROBE_TEXT, voice).audio.tobytes()).hexdigest()


def check_voices(names: list[str], engine: Espeak | None = None) -> list[Voice]:
    """Return ``names`` as Voices; DataError for one espeak silently replaces by plain en-us.

    espeak accepts any ``en-us+<variant>`` name and speaks plain en-us when the variant does
    not exist, so each variant is compared bit for bit with plain en-us on a probe sentence.
    """
    engine = engine or Espeak()
    plain = _probe_digest(engine, "en-us")
    voices = []
    for name in names:
        variant = name.partition("+")[2]
        if variant and _probe_digest(engine, name) == plain:
            raise DataError(
                f"espeak-ng voice {name!r}: sounds exactly like plain en-us (unknown variant, "
                f"silently replaced); pick a variant from {engine.variants_dir}"
            )
        path = engine.variants_dir / variant
        voices.append(Voice(name, _variant_sex(path) if variant and path.is_file() else "m"))
    return voices


@lru_cache(maxsize=1)
def usable_voices() -> tuple[Voice, ...]:
    """Plain en-us plus every installed variant that really sounds different.

    Variants whose probe audio equals plain en-us or an earlier kept voice bit for bit are
    dropped (duplicates would put one voice in train and test under two names), as are
    EXCLUDED_VARIANTS and file names that are not plain identifiers.
    """
    engine = Espeak()
    variants = sorted(
        p.name
        for p in engine.variants_dir.iterdir()
        if p.is_file() and re.fullmatch(r"[A-Za-z0-9_]+", p.name) and p.name not in EXCLUDED_VARIANTS
    )
    kept: list[Voice] = []
    seen: set[str] = set()
    for name in ["en-us"] + [f"en-us+{v}" for v in variants]:
        digest = _probe_digest(engine, name)
        if digest not in seen:  # plain en-us comes first, so silent fallbacks never pass
            seen.add(digest)
            variant = name.partition("+")[2]
            kept.append(Voice(name, _variant_sex(engine.variants_dir / variant) if variant else "m"))
    return tuple(kept)


# ---------------------------------------------------------------------------------------------
# speakers and utterances


@dataclass(frozen=True)
class Speaker:
    id: str  # lower-case, e.g. mand0
    voice: str
    sex: str
    split: str  # train, dev or test
    dialect: int  # 1..8 (the DR<d> directory)
    rate: int  # words per minute
    pitch: int  # espeak 0..100
    pitch_range: int  # espeak 0..100
    snr_db: float
    sentences: tuple[int, ...]  # Harvard indices (0-based), SA1/SA2 first

    @property
    def directory(self) -> str:
        return f"{'TRAIN' if self.split == 'train' else 'TEST'}/DR{self.dialect}/{self.id.upper()}"


def _speaker_ids(voices: list[Voice]) -> list[str]:
    """TIMIT-like ids: sex letter, 3 letters from the voice name, a digit (unique)."""
    used: set[str] = set()
    ids = []
    for voice in voices:
        letters = (re.sub(r"[^A-Za-z]", "", voice.name.partition("+")[2] or "usa").lower() + "xxx")[:3]
        candidates = (
            f"{voice.sex}{letters[:2]}{c}{d}"
            for c in dict.fromkeys(letters[2] + "abcdefghijklmnopqrstuvwxyz")
            for d in range(10)
        )
        spk = next(c for c in candidates if c not in used)
        used.add(spk)
        ids.append(spk)
    return ids


def plan_speakers(speakers: int | None, utts_per_speaker: int, seed: int) -> list[Speaker]:
    """Choose voices, splits, per-speaker settings and sentences, all from ``seed``."""
    voices = list(usable_voices())
    n = len(voices) if speakers is None else speakers
    if not 3 <= n <= len(voices):
        raise ConfigError(
            f"--speakers {n}: need 3..{len(voices)} (one speaker per usable espeak voice; "
            f"at least one each for train, dev and test)"
        )
    rng = np.random.default_rng(seed)
    chosen = [voices[i] for i in rng.permutation(len(voices))[:n]]
    held = max(1, round(n * HELD_OUT_FRACTION))
    splits = ["dev"] * held + ["test"] * held + ["train"] * (n - 2 * held)
    pool = rng.permutation(np.arange(2, len(harvard_sentences())))
    n_test_text = round(len(pool) * TEST_TEXT_FRACTION)
    pools = {"train": pool[n_test_text:], "dev": pool[:n_test_text], "test": pool[:n_test_text]}
    if utts_per_speaker < 1 or utts_per_speaker > n_test_text:
        raise ConfigError(
            f"--utts-per-speaker {utts_per_speaker}: need 1..{n_test_text} (sentences reserved for dev/test speakers)"
        )
    plans = []
    for k, (voice, spk_id, split) in enumerate(zip(chosen, _speaker_ids(chosen), splits)):
        picked = rng.choice(pools[split], size=utts_per_speaker, replace=False)
        plans.append(
            Speaker(
                id=spk_id,
                voice=voice.name,
                sex=voice.sex,
                split=split,
                dialect=1 + k % 8,
                rate=int(rng.integers(130, 211)),
                pitch=int(rng.integers(25, 76)),
                pitch_range=int(rng.integers(25, 76)),
                snr_db=round(float(rng.uniform(20.0, 30.0)), 1),
                sentences=(0, 1) + tuple(int(i) for i in sorted(picked)),
            )
        )
    return sorted(plans, key=lambda s: (s.directory, s.id))


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # int16 at RATE
    phones: list[tuple[int, int, str]]
    words: list[tuple[int, int, str]]
    text: str


def _word_tokens(text: str) -> list[tuple[int, int, str]]:
    """(start, end, lower-case word) character spans; hyphenated words stay one token."""
    return [(m.start(), m.end(), m.group().lower()) for m in re.finditer(r"[A-Za-z0-9']+(?:-[A-Za-z0-9']+)*", text)]


def segment(spoken: Spoken, text: str, where: str) -> tuple[list[tuple[int, int, str]], list[tuple[int, int, str]]]:
    """Phone and word segments in samples at espeak's rate, before padding.

    Phone i spans [its event sample, the next phone event's sample); zero-length ones vanish.
    Returns (phones covering [0, len(audio)) from h# to h#, words as spans of their phones).
    """
    table = phone_map()
    n = len(spoken.audio)
    tokens = _word_tokens(text)
    raw: list[tuple[int, str, int]] = []  # (sample, espeak label, token index)
    token = -1
    for kind, sample, value in spoken.events:
        if kind == "w":
            token = next((i for i, (a, b, _) in enumerate(tokens) if a <= int(value) - 1 < b), token)
        else:
            raw.append((min(max(int(sample), raw[-1][0] if raw else 0), n), str(value), token))
    phones: list[tuple[int, int, str, int]] = []
    for i, (start, label, tok) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < len(raw) else n
        if end <= start:
            continue
        key = strip_stress(label)
        if key not in table:
            raise DataError(
                f"{where}: espeak phoneme {label!r} has no TIMIT label in "
                f"snnasr/resources/espeak_timit61.tsv; add a row for it"
            )
        targets = table[key]
        cuts = np.linspace(start, end, len(targets) + 1).round().astype(int)
        phones += [(int(a), int(b), t, tok) for a, b, t in zip(cuts[:-1], cuts[1:], targets) if b > a]
    speech = [i for i, p in enumerate(phones) if p[2] != PAUSE]
    if not speech:
        raise DataError(f"{where}: espeak produced no phonemes for {text!r}")
    first, last = phones[speech[0]][0], phones[speech[-1]][1]
    segs = [(0, first, EDGE)] if first > 0 else []
    segs += [p[:3] for p in phones[speech[0] : speech[-1] + 1]]
    segs += [(last, n, EDGE)] if last < n else []
    return _merge(segs), _word_spans([p for p in phones if p[2] != PAUSE], tokens)


def _word_spans(
    phones: list[tuple[int, int, str, int]], tokens: list[tuple[int, int, str]]
) -> list[tuple[int, int, str]]:
    """Word segments from phones tagged with the token of their espeak word event.

    espeak sometimes speaks two words under one event ("on the"); the tokens it skipped share
    that event's phones in order, in proportion to their length in characters.
    """
    events = sorted({tok for *_, tok in phones if tok >= 0})
    spans: dict[int, list[int]] = {}
    for k, tok in enumerate(events):
        group = [p for p in phones if p[3] == tok]
        covered = list(range(tok, events[k + 1] if k + 1 < len(events) else len(tokens))) or [tok]
        weights = np.cumsum([tokens[t][1] - tokens[t][0] for t in covered], dtype=float)
        for i, (a, b, _, _) in enumerate(group):
            t = covered[int(np.searchsorted(weights / weights[-1], (i + 0.5) / len(group)))]
            span = spans.setdefault(t, [a, b])
            span[0], span[1] = min(span[0], a), max(span[1], b)
    return [(a, b, tokens[t][2]) for t, (a, b) in sorted(spans.items())]


def _merge(segs: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Join neighbouring pause/silence segments and drop empty ones, keeping contiguity."""
    out: list[tuple[int, int, str]] = []
    for a, b, label in segs:
        if b <= a:
            continue
        if out and out[-1][2] == label and label in (PAUSE, EDGE):
            out[-1] = (out[-1][0], b, label)
        else:
            out.append((a, b, label))
    return out


def _rescale(
    segs: list[tuple[int, int, str]], factor: float, offset: int, total: int, edges: bool
) -> list[tuple[int, int, str]]:
    """Move segments to the output rate and padding; with ``edges`` stretch to [0, total)."""
    moved = [(offset + round(a * factor), offset + round(b * factor), label) for a, b, label in segs]
    if edges:
        moved[0] = (0, moved[0][1], moved[0][2]) if moved[0][2] == EDGE else moved[0]
        moved = ([(0, moved[0][0], EDGE)] if moved[0][0] > 0 else []) + moved
        moved[-1] = (moved[-1][0], total, moved[-1][2]) if moved[-1][2] == EDGE else moved[-1]
        moved += [(moved[-1][1], total, EDGE)] if moved[-1][1] < total else []
        return _merge(moved)
    return [m for m in moved if m[1] > m[0]]


def render(engine: Espeak, speaker: Speaker, sentence: int, seed: int, where: str) -> Utterance:
    """One utterance: espeak at the speaker's settings (jittered), resampled, padded, noised."""
    rng = np.random.default_rng([seed, int(hashlib.sha1(speaker.id.encode()).hexdigest()[:8], 16), sentence])
    text = harvard_sentences()[sentence]
    spoken = engine.speak(
        text,
        speaker.voice,
        rate=int(np.clip(speaker.rate + rng.integers(-10, 11), 80, 450)),
        pitch=int(np.clip(speaker.pitch + rng.integers(-5, 6), 0, 100)),
        pitch_range=int(np.clip(speaker.pitch_range + rng.integers(-5, 6), 0, 100)),
        seed=int(rng.integers(1, 2**31 - 1)),
    )
    phones, words = segment(spoken, text, where)
    wave = resample(spoken.audio, spoken.rate, RATE)
    lead, trail = (int(rng.uniform(0.10, 0.30) * RATE) for _ in range(2))
    signal = np.concatenate([np.zeros(lead, np.float32), wave, np.zeros(trail, np.float32)])
    power = float(np.mean(wave.astype(np.float64) ** 2)) or 1.0
    snr = speaker.snr_db + rng.uniform(-1.5, 1.5)
    signal = signal + rng.normal(0.0, np.sqrt(power / 10 ** (snr / 10)), signal.shape)
    audio = np.clip(np.round(signal), -32768, 32767).astype(np.int16)
    factor = RATE / spoken.rate
    return Utterance(
        audio,
        _rescale(phones, factor, lead, len(audio), edges=True),
        _rescale(words, factor, lead, len(audio), edges=False),
        text,
    )


@lru_cache(maxsize=4)
def _sinc_kernel(orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> tuple[np.ndarray, int]:
    """torchaudio's hann-windowed sinc polyphase kernel ([new, K], width), in float64."""
    base = min(orig, new) * rolloff
    width = int(np.ceil(lowpass_filter_width * orig / base))
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx[None, :]) * base
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * np.pi / lowpass_filter_width / 2) ** 2
    t = t * np.pi
    sinc = np.divide(np.sin(t), t, out=np.ones_like(t), where=t != 0)
    return sinc * window * (base / orig), width


def resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Band-limited resampling, the same filter as torchaudio.functional.resample.

    Done in numpy float64 rather than torch: torch's oneDNN convolution caches a primitive per
    input length (memory grows ~1 MB per utterance) and its results depended on that cache,
    which broke bit-for-bit reproducibility.  It equals ``torchaudio.functional.resample`` to
    ~1e-15 (tests/test_synth.py).  Not soxr or scipy's ``resample_poly``: another filter would
    change every synthesised file (and the demo results made from them) for no gain.
    """
    g = np.gcd(orig, new)
    orig, new = orig // g, new // g
    kernel, width = _sinc_kernel(orig, new)
    padded = np.concatenate([np.zeros(width), x.astype(np.float64), np.zeros(width + orig)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig]
    out = (frames @ kernel.T).reshape(-1)
    return out[: -(-new * len(x) // orig)]


def write_utterance(utt: Utterance, stem: Path, nist: bool) -> None:
    """Write <stem>.WAV (NIST SPHERE or RIFF), .PHN, .WRD and .TXT."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if nist:
        sf.write(f"{stem}.WAV", utt.audio, RATE, format="NIST", subtype="PCM_16")
    else:
        sf.write(f"{stem}.WAV", utt.audio, RATE, format="WAV", subtype="PCM_16")
    Path(f"{stem}.PHN").write_text("".join(f"{a} {b} {p}\n" for a, b, p in utt.phones))
    Path(f"{stem}.WRD").write_text("".join(f"{a} {b} {w}\n" for a, b, w in utt.words))
    Path(f"{stem}.TXT").write_text(f"0 {len(utt.audio)} {utt.text}\n")


# ---------------------------------------------------------------------------------------------
# the command


def _options(speakers: int | None, utts_per_speaker: int, seed: int) -> dict:
    return {"generator": GENERATOR, "speakers": speakers, "utts_per_speaker": utts_per_speaker, "seed": seed}


def _existing(out: Path, options: dict) -> dict | None:
    """Counts of a complete corpus in ``out`` made with ``options``; None to (re)generate.

    DataError when ``out`` holds something that is not a synth corpus: never delete user data.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory; choose another OUT for `snnasr synth`")
    meta_path = out / "synth.yaml"
    if not meta_path.is_file():
        if any(out.iterdir()):
            raise DataError(
                f"{out}: not empty and not made by `snnasr synth` (no synth.yaml); choose another OUT or empty it"
            )
        return None
    try:
        meta = yaml.safe_load(meta_path.read_text()) or {}
    except yaml.YAMLError:
        return None
    if meta.get("options") != options:
        return None
    n_wav = sum(1 for p in out.rglob("*") if p.suffix == ".WAV")
    return meta["counts"] if n_wav == meta.get("counts", {}).get("files") else None


def synthesize(
    out: str | os.PathLike, speakers: int | None = None, utts_per_speaker: int | None = None, seed: int = 1
) -> dict:
    """Write the synthetic TIMIT into ``out`` and return counts.

    Args:
        out: corpus root to create (the parent must be writable).  If it already holds a
            complete corpus made with the same options nothing is done; one made with other
            options is replaced atomically; anything else raises DataError.
        speakers: number of speakers, one per usable espeak voice (default: every usable voice);
            10% (at least one) are dev and another 10% test speakers.
        utts_per_speaker: SX/SI sentences per speaker (default 10); SA1/SA2 come on top.
        seed: drives voice choice, splits, settings, sentences and noise.
    Returns:
        {"train", "dev", "test": utterances without SA, "speakers", "files": WAVs written,
         "hours": audio duration of all files}.
    Raises:
        ConfigError for impossible sizes, DataError for an unusable OUT or espeak failure.
    """
    out = Path(out)
    utts = DEFAULT_UTTS_PER_SPEAKER if utts_per_speaker is None else utts_per_speaker
    options = _options(speakers, utts, seed)
    done = _existing(out, options)
    if done is not None:
        return done
    plan = plan_speakers(speakers, utts, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        counts = _generate(tmp, plan, seed)
        meta = {
            "options": options,
            "counts": counts,
            "speakers": [
                {k: v for k, v in asdict(s).items() if k != "sentences"}
                | {"sentences": [sentence_name(i) for i in s.sentences]}
                for s in plan
            ],
        }
        (tmp / "synth.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


def _generate(root: Path, plan: list[Speaker], seed: int) -> dict:
    engine = Espeak()
    jobs = [(s, i) for s in plan for i in s.sentences]
    counts = {"train": 0, "dev": 0, "test": 0, "speakers": len(plan), "files": 0, "hours": 0.0}
    samples = 0
    for k, (spk, sentence) in enumerate(tqdm(jobs, desc="synth", unit="utt", disable=not sys.stderr.isatty())):
        stem = root / spk.directory / sentence_name(sentence)
        utt = render(engine, spk, sentence, seed, where=f"{spk.id}_{sentence_name(sentence).lower()}")
        write_utterance(utt, stem, nist=k % NIST_EVERY == 0)
        samples += len(utt.audio)
        counts["files"] += 1
        if sentence >= 2:
            counts[spk.split] += 1
    counts["hours"] = round(samples / RATE / 3600, 3)
    for split in ("dev", "test"):
        (root / f"{split}_speakers.txt").write_text("".join(f"{s.id}\n" for s in plan if s.split == split))
    return counts


def _replace_dir(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``; an old corpus there is moved aside first and deleted after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / "corpus")
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
