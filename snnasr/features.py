"""``snnasr features``: Kaldi-compatible fbank/MFCC, CMVN statistics and frame labels.

Inputs (``data/<set>/``): ``wav.scp``, ``utt2spk`` (+ ``text``, ``spk2utt`` for validation),
optional ``phone_segments`` with ``data/lang/``.  Outputs, in this order:

``feats.ark/.scp``     float32 ``[frames, dim]`` per utterance, sorted by uttid
``utt2num_frames``     frame count per utterance
``cmvn.ark/.scp``      Kaldi CMVN stats (``2 x (dim+1)`` float64: row 0 = sums then count,
                       row 1 = sums of squares), keyed by speaker (``cmvn=speaker``) or by
                       utterance (``utt``); absent for ``none``
``frame_shift``        seconds, as Kaldi's ``make_mfcc.sh`` writes it
``labels_<L>.ark/.scp`` one class id per frame for every lang level (only with phone_segments)
``conf/features.yaml`` options, their hash, input fingerprints, sample rate, framing, dim,
                       the utterances dropped; written LAST, so its presence with a matching
                       hash means "done" (``--force`` redoes the set anyway)
``dropped``            bad utterances left out of every output, with why (:mod:`snnasr.data.drops`)

Phone segments are fitted to the audio first (:func:`snnasr.labels.fit_to_audio`: unlabelled
edges next to ``h#``/``sil`` up to 0.5 s are that silence), so labels and features always have
the same frame count; ``length_tolerance`` is the tolerance training applies to label files
made elsewhere (Kaldi alignments).  An utterance whose audio or segments are bad is dropped,
not fatal, up to ``max_bad_fraction`` of the set.

Extraction goes through ``torchaudio.compliance.kaldi`` with Kaldi's defaults (25 ms window,
10 ms shift, povey window, pre-emphasis 0.97, snip_edges) except dither: Kaldi uses 1.0, here
it defaults to 0 so that features are reproducible; ``--dither 1.0`` restores Kaldi's (seeded
per utterance, so ``--jobs`` does not change the result).  Deltas follow Kaldi ``add-deltas``
exactly (see :func:`add_deltas`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import zlib
from collections.abc import Generator, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import yaml
from tqdm import tqdm

from snnasr import labels as L
from snnasr.audio import audio_info, read_audio, wav_path
from snnasr.config import read_yaml_mapping
from snnasr.data.datadir import read_segments, read_table, sort_key, validate_data_dir, write_table
from snnasr.data.drops import DEFAULT_MAX_BAD_FRACTION, BadUtterances
from snnasr.io import ConfigError, DataError, remove_stale_temporaries, write_text
from snnasr.kaldi.ark import write_mat_ark_scp
from snnasr.lang import Lang, load_lang

FEATURE_TYPES = ("fbank", "mfcc")
CMVN_MODES = ("speaker", "utt", "none")
WINDOWS = ("povey", "hamming", "hanning", "rectangular", "blackman")
DEFAULT_BINS = {"fbank": 40, "mfcc": 23}
STATE_FILE = Path("conf") / "features.yaml"
YAML_ALIASES = {"type": "ftype"}


@dataclass
class FeatureOptions:
    """Everything that changes the feature values; all of it goes into the stage hash."""

    ftype: str = "fbank"
    num_bins: int | None = None  # None: 40 for fbank, 23 for MFCC
    num_ceps: int = 13
    deltas: bool = False
    cmvn: str = "speaker"
    dither: float = 0.0
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    window: str = "povey"
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from Nyquist, as in Kaldi
    cepstral_lifter: float = 22.0
    use_energy: bool = False  # MFCC C0 replaced by log energy (Kaldi default true; yes/no conf false)
    length_tolerance: int = L.DEFAULT_TOLERANCE  # frames labels may differ from features

    @classmethod
    def load(cls, config_path: str | os.PathLike | None = None, **cli_values: Any) -> FeatureOptions:
        """Defaults, then the YAML file, then ``cli_values`` that are not None (explicit options win).

        YAML keys are the field names (``type`` for ``ftype``; ``-`` may replace ``_``).
        Raises ConfigError for unknown keys, wrong types and impossible values.
        """
        values: dict[str, Any] = {}
        if config_path is not None:
            path = Path(config_path)
            raw = read_yaml_mapping(path, "feature")
            for key, value in raw.items():
                name = str(key).replace("-", "_")
                values[YAML_ALIASES.get(name, name)] = value
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ConfigError(
                    f"{path}: unknown feature option {unknown[0]!r}; known: type, "
                    + ", ".join(sorted(known - {"ftype"}))
                )
        values.update({k: v for k, v in cli_values.items() if v is not None})
        hints: dict[str, Any] = {f.name: f.type for f in fields(cls)}
        opts = cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})
        if opts.num_bins is None:
            opts.num_bins = DEFAULT_BINS[opts.ftype] if opts.ftype in DEFAULT_BINS else 0
        return opts.check()

    def check(self) -> FeatureOptions:
        _choice("type", self.ftype, FEATURE_TYPES)
        _choice("cmvn", self.cmvn, CMVN_MODES)
        _choice("window", self.window, WINDOWS)
        if not self.num_bins or self.num_bins < 1:
            raise ConfigError(f"num_bins={self.num_bins}: must be a positive number of mel bins")
        if self.ftype == "mfcc" and not 1 <= self.num_ceps <= self.num_bins:
            raise ConfigError(f"num_ceps={self.num_ceps}: must be between 1 and num_bins ({self.num_bins})")
        if self.dither < 0:
            raise ConfigError(f"dither={self.dither}: must be >= 0 (Kaldi uses 1.0, 0 disables it)")
        if self.frame_shift_ms <= 0 or self.frame_length_ms < self.frame_shift_ms:
            raise ConfigError(
                f"frame_length_ms={self.frame_length_ms}, frame_shift_ms={self.frame_shift_ms}: "
                f"need 0 < shift <= length"
            )
        if self.length_tolerance < 0:
            raise ConfigError(f"length_tolerance={self.length_tolerance}: must be >= 0 frames")
        return self

    @property
    def dim(self) -> int:
        base = cast(int, self.num_bins) if self.ftype == "fbank" else self.num_ceps  # set by load()
        return base * (3 if self.deltas else 1)

    def digest(self) -> str:
        """Hash of the options: a changed option must recompute the stage."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: choose one of {', '.join(choices)}")


def _coerce(name: str, value: Any, tp: str) -> Any:
    """Check a YAML/CLI value against the field's annotation (kept as a string here)."""
    if value is None and "None" in tp:
        return None
    base = tp.split("|")[0].strip()
    if base == "bool" and isinstance(value, bool):
        return value
    if base == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base == "str" and isinstance(value, str):
        return value
    raise ConfigError(f"feature option {name}: expected {base}, got {value!r}")


# --- extraction ------------------------------------------------------------------------------


def extract(samples: np.ndarray, sample_rate: int, opts: FeatureOptions) -> np.ndarray:
    """fbank/MFCC (+ deltas) of int16-range samples as float32 ``[frames, dim]``."""
    import torch
    from torchaudio.compliance import kaldi

    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).unsqueeze(0)
    common = dict(
        sample_frequency=float(sample_rate),
        frame_length=opts.frame_length_ms,
        frame_shift=opts.frame_shift_ms,
        dither=opts.dither,
        preemphasis_coefficient=opts.preemphasis,
        window_type=opts.window,
        low_freq=opts.low_freq,
        high_freq=opts.high_freq,
        num_mel_bins=opts.num_bins,
        snip_edges=True,
        use_energy=opts.use_energy,
        energy_floor=0.0,
    )
    if opts.ftype == "fbank":
        feats = kaldi.fbank(wave, **common)
    else:
        feats = kaldi.mfcc(wave, num_ceps=opts.num_ceps, cepstral_lifter=opts.cepstral_lifter, **common)
    feats = feats.numpy()
    if opts.deltas:
        feats = add_deltas(feats)
    return feats.astype(np.float32, copy=False)


def delta_kernels(order: int = 2, window: int = 2) -> list[np.ndarray]:
    """Kaldi ``DeltaFeatures`` scales: order k is the order-(k-1) kernel convolved with j/sum(j^2)."""
    kernels = [np.ones(1)]
    base = np.arange(-window, window + 1, dtype=np.float64)
    base /= np.sum(base**2)
    for _ in range(order):
        kernels.append(np.convolve(kernels[-1], base))
    return kernels


def add_deltas(feats: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Kaldi ``add-deltas``: ``[T, D] -> [T, D*(order+1)]``.

    Every order is a filter over the *original* frames with edge frames replicated (Kaldi
    clamps the frame index).  Applying ``torchaudio.functional.compute_deltas`` twice gives the
    same first order but a different second order near the edges, because it replicates the
    edge *deltas*; hence this direct form.
    """
    feats = np.asarray(feats, dtype=np.float64)
    kernels = delta_kernels(order, window)
    reach = order * window
    idx = np.clip(np.arange(-reach, len(feats) + reach), 0, len(feats) - 1)
    padded = feats[idx]
    out = [feats]
    for k in kernels[1:]:
        half = len(k) // 2
        acc = np.zeros_like(feats)
        for j, w in enumerate(k):
            start = reach - half + j
            acc += w * padded[start : start + len(feats)]
        out.append(acc)
    return np.concatenate(out, axis=1)


def cmvn_stats(feats: np.ndarray) -> np.ndarray:
    """Kaldi ``compute-cmvn-stats`` of one matrix: ``2 x (D+1)`` float64."""
    feats = np.asarray(feats, dtype=np.float64)
    stats = np.zeros((2, feats.shape[1] + 1))
    stats[0, :-1] = feats.sum(axis=0)
    stats[1, :-1] = (feats**2).sum(axis=0)
    stats[0, -1] = len(feats)
    return stats


def _utt_features(task: tuple[str, str, int, FeatureOptions]) -> tuple[str, np.ndarray | None, str | None]:
    """Worker: read one utterance and extract its features -> (uttid, feats, None) or (uttid, None, why).

    A bad utterance is returned, not raised, so that one broken file does not stop the pool.
    """
    uttid, path, rate, opts = task
    try:
        samples, _ = read_audio(path, expected_rate=rate)
    except DataError as e:
        return uttid, None, str(e)
    import torch

    # A per-utterance seed makes dithered features independent of --jobs and of run order.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(uttid.encode()))
        try:
            feats = extract(samples, rate, opts)
        except (AssertionError, ValueError, RuntimeError) as e:
            return (
                uttid,
                None,
                (
                    f"feature extraction failed at {rate} Hz ({e}); check the frequency "
                    f"options (low_freq, high_freq, num_bins) for this sample rate"
                ),
            )
    if not np.isfinite(feats).all():
        return uttid, None, "non-finite feature values; check the audio"
    return uttid, feats, None


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; intra-op threads would oversubscribe


def _compute(
    tasks: list[tuple[str, str, int, FeatureOptions]], jobs: int
) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """Features in task (sorted uttid) order, in-process or over ``jobs`` worker processes."""
    if jobs <= 1 or len(tasks) < 2:
        for task in tasks:
            yield _utt_features(task)
        return
    # forkserver, not fork: forking a process whose torch already runs threads can deadlock.
    pool = ProcessPoolExecutor(
        max_workers=jobs, initializer=_init_worker, mp_context=multiprocessing.get_context("forkserver")
    )
    try:
        chunk = max(1, min(32, len(tasks) // (jobs * 4)))
        yield from pool.map(_utt_features, tasks, chunksize=chunk)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- the stage -------------------------------------------------------------------------------


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def _lang_sha(lang_dir: Path) -> str | None:
    if not (lang_dir / "labels.yaml").is_file():
        return None
    h = hashlib.sha256()
    for p in sorted(lang_dir.glob("*.txt")) + [lang_dir / "labels.yaml"]:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _scp_keys(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return [line.split(maxsplit=1)[0] for line in f if line.strip()]


def _read_state(path: Path) -> dict:
    try:
        state = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (yaml.YAMLError, OSError):
        return {}
    return state if isinstance(state, dict) else {}


def _warn(msg: str) -> None:
    print(f"snnasr features: warning: {msg}", file=sys.stderr)


def _scan_audio(
    data_dir: Path, wav: dict[str, str], opts: FeatureOptions, bad: BadUtterances
) -> tuple[dict[str, str], dict[str, int], int]:
    """Resolve paths and check headers before any work: one sample rate, every utt >= 1 window.

    Returns (paths, samples, rate) of the utterances kept; unreadable or too short ones are dropped.
    """
    paths, samples, rates = {}, {}, {}
    for utt, entry in wav.items():
        if utt in bad:
            continue
        try:
            path = wav_path(entry, f"{data_dir}/wav.scp: {utt}")
            samples[utt], rates[utt] = audio_info(path)
        except DataError as e:
            bad.drop(utt, e)
            continue
        paths[utt] = str(path)
    if not rates:
        bad.check(len(wav))
    distinct = sorted(set(rates.values()))
    if len(distinct) > 1:
        examples = ", ".join(f"{next(u for u in rates if rates[u] == r)} {r} Hz" for r in distinct)
        raise DataError(f"{data_dir}: mixed sample rates ({examples}); resample the corpus to one rate")
    rate = distinct[0]
    win, _ = L.window_samples(rate, opts.frame_length_ms, opts.frame_shift_ms)
    for utt, n in list(samples.items()):
        if n < win:
            bad.drop(
                utt,
                f"audio has {n} samples, shorter than one {opts.frame_length_ms:g} ms window "
                f"({win} samples at {rate} Hz)",
            )
            del samples[utt], paths[utt]
    return paths, samples, rate


def _write_features(
    data_dir: Path,
    utts: list[str],
    utt2spk: dict[str, str],
    paths: dict[str, str],
    rate: int,
    opts: FeatureOptions,
    jobs: int,
    bad: BadUtterances,
) -> dict[str, int]:
    """Extract and write feats, utt2num_frames, cmvn and frame_shift; return frames per kept utt."""
    frames: dict[str, int] = {}
    stats: dict[str, np.ndarray] = {}
    tasks = [(u, paths[u], rate, opts) for u in utts]
    bar = tqdm(
        total=len(tasks), desc=f"features {data_dir.name}", unit="utt", file=sys.stderr, disable=not sys.stderr.isatty()
    )

    def produce() -> Generator[tuple[str, np.ndarray], None, None]:
        for utt, feats, why in _compute(tasks, jobs):
            bar.update()
            if feats is None:
                bad.drop(utt, why or "feature extraction failed")
                continue
            frames[utt] = len(feats)
            key = utt2spk[utt] if opts.cmvn == "speaker" else utt
            s = cmvn_stats(feats)
            stats[key] = stats[key] + s if key in stats else s
            yield utt, feats

    with bar, contextlib.closing(produce()) as items:
        write_mat_ark_scp(items, data_dir / "feats.ark", data_dir / "feats.scp")
    if not frames:
        raise DataError(f"{data_dir}: every utterance failed feature extraction (see the warnings above)")
    write_table(data_dir / "utt2num_frames", {u: str(n) for u, n in frames.items()})
    cmvn_ark, cmvn_scp = data_dir / "cmvn.ark", data_dir / "cmvn.scp"
    if opts.cmvn == "none":
        for p in (cmvn_scp, cmvn_ark):
            p.unlink(missing_ok=True)
    else:
        keys = sorted(stats, key=sort_key)
        write_mat_ark_scp(((k, stats[k]) for k in keys), cmvn_ark, cmvn_scp, dtype=np.float64)
    write_text(data_dir / "frame_shift", f"{opts.frame_shift_ms / 1000:g}\n")
    return frames


def _load_segments(data_dir: Path, utts: list[str], bad: BadUtterances) -> tuple[Lang, dict[str, list[L.Segment]]]:
    """Lang and validated phone segments, checked before any audio is read so errors come early."""
    lang = load_lang(data_dir.parent / "lang")
    L.level_maps(lang)  # every level must be reachable from the segment level
    known = set(lang.symbols(cast(str, lang.segment_level))) | set(L.MERGED_SYMBOLS)  # checked just above
    segs = read_segments(data_dir / "phone_segments")
    for utt in utts:
        if utt in segs:
            try:
                L.validate_segments(utt, segs[utt], known)
            except DataError as e:
                bad.drop(utt, e)
    return lang, segs


def _fit_segments(
    utts: list[str],
    samples: dict[str, int],
    rate: int,
    opts: FeatureOptions,
    segs: dict[str, list[L.Segment]],
    bad: BadUtterances,
) -> dict[str, list[L.Segment]]:
    """Segments of each kept utterance fitted to its audio (edge silence, see labels.fit_to_audio).

    Checked from the audio headers, before extraction, so an utterance dropped here is in no output.
    """
    fitted = {}
    for utt in utts:
        if utt not in segs or utt in bad:
            continue
        try:
            fitted[utt] = L.fit_to_audio(utt, segs[utt], samples[utt], rate)
        except DataError as e:
            bad.drop(utt, e)
    return fitted


def _write_labels(
    data_dir: Path,
    frames: dict[str, int],
    rate: int,
    opts: FeatureOptions,
    lang: Lang,
    segs: dict[str, list[L.Segment]],
) -> dict[str, int]:
    """Frame labels of every lang level from the fitted phone segments; return utterances per level."""
    utts = list(frames)
    per_utt: dict[str, list[str]] = {}
    missing = [u for u in utts if u not in segs]
    for utt in utts:
        if utt not in segs:
            continue
        per_utt[utt] = L.frame_labels_from_segments(
            segs[utt],
            frames[utt],
            rate,
            uttid=utt,
            frame_length_ms=opts.frame_length_ms,
            frame_shift_ms=opts.frame_shift_ms,
        )
    if not per_utt:
        raise DataError(f"{data_dir}/phone_segments: no utterance of wav.scp has segments; re-run snnasr prep")
    if missing:
        _warn(
            f"{data_dir}: {len(missing)} of {len(utts)} utterances have no phone segments (e.g. {missing[0]}); "
            f"they get no frame labels"
        )
    return L.write_label_levels(data_dir, lang, per_utt)


def make_features(
    data_dir: str | os.PathLike,
    opts: FeatureOptions,
    jobs: int = 1,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    strict: bool = False,
    force: bool = False,
) -> dict[str, int]:
    """Run the features stage for one data dir; skip it when ``conf/features.yaml`` is current.

    ``force`` recomputes everything even then.
    Returns counts for the CLI: utterances (kept), dropped, frames, dim, labelled utterances.
    A bad utterance (unreadable, empty, too short or non-finite audio, bad phone segments,
    segments that do not fit the audio beyond edge silence, see :func:`snnasr.labels.fit_to_audio`)
    is dropped by name and listed in ``dropped`` (:mod:`snnasr.data.drops`); it is in no output.
    Raises DataError when more than ``max_bad_fraction`` of the set is bad (any, with ``strict``),
    for a missing or invalid data dir and for mixed sample rates; ConfigError for ``jobs < 1``.
    Nothing marks the stage done unless every output is written.
    """
    if jobs < 1:
        raise ConfigError(f"jobs={jobs}: must be at least 1")
    data_dir = Path(data_dir)
    validate_data_dir(data_dir)
    stale = remove_stale_temporaries(data_dir, data_dir / STATE_FILE.parent)
    if stale:
        _warn(f"{data_dir}: removed {stale} temporary files left by an interrupted run")
    wav = read_table(data_dir / "wav.scp")
    utt2spk = read_table(data_dir / "utt2spk")
    utts = list(wav)
    has_segments = (data_dir / "phone_segments").is_file()
    lang_dir = data_dir.parent / "lang"
    inputs = {
        "wav.scp": _sha(data_dir / "wav.scp"),
        "utt2spk": _sha(data_dir / "utt2spk"),
        "phone_segments": _sha(data_dir / "phone_segments"),
        "lang": _lang_sha(lang_dir) if has_segments else None,
    }
    state_path = data_dir / STATE_FILE
    state = _read_state(state_path)
    old_inputs = state.get("inputs") or {}
    features_inputs_same = state.get("hash") == opts.digest() and all(
        old_inputs.get(k) == inputs[k] for k in ("wav.scp", "utt2spk")
    )
    labels_inputs_same = features_inputs_same and all(
        old_inputs.get(k) == inputs[k] for k in ("phone_segments", "lang")
    )
    dropped_before = state.get("dropped") or {}
    kept_before = [u for u in utts if u not in dropped_before]
    if (
        not force
        and labels_inputs_same
        and _features_complete(data_dir, kept_before, opts)
        and all(
            len(_scp_keys(data_dir / f"labels_{lv}.scp") or []) == state.get("labelled", 0)
            for lv in state.get("label_levels") or []
        )
    ):
        print(f"{data_dir}: features up to date ({STATE_FILE} matches); skipping", file=sys.stderr)
        return {
            "utterances": len(kept_before),
            "dropped": len(dropped_before),
            "frames": state["frames"],
            "dim": state["dim"],
            "labelled": state.get("labelled", 0),
        }

    # From here until the state file is rewritten, the outputs are not trusted.
    state_path.unlink(missing_ok=True)
    bad = BadUtterances("features", data_dir, max_bad_fraction, strict)
    lang, segs = _load_segments(data_dir, utts, bad) if has_segments else (None, {})
    paths, samples, rate = _scan_audio(data_dir, wav, opts, bad)
    fitted = _fit_segments(utts, samples, rate, opts, segs, bad) if has_segments else {}
    bad.check(len(utts))
    # Utterances the previous run dropped while extracting (e.g. NaN samples) stay dropped.
    failed_before = state.get("extraction_dropped") or {} if features_inputs_same else {}
    kept = [u for u in utts if u not in bad and u not in failed_before]
    if not force and features_inputs_same and _features_complete(data_dir, kept, opts):
        print(f"{data_dir}: features up to date, redoing the labels only", file=sys.stderr)
        for utt, why in failed_before.items():
            bad.drop(utt, why)
        frames = {u: int(n) for u, n in read_table(data_dir / "utt2num_frames").items()}
    else:
        before_extraction = set(bad.reasons)
        frames = _write_features(data_dir, kept, utt2spk, paths, rate, opts, jobs, bad)
        failed_before = {u: r for u, r in bad.reasons.items() if u not in before_extraction}
    bad.check(len(utts))
    label_counts = _write_labels(data_dir, frames, rate, opts, lang, fitted) if lang is not None else {}
    bad.finish(len(utts))

    labelled = next(iter(label_counts.values()), 0)
    new_state: dict[str, Any] = {
        "type": opts.ftype,
        "dim": opts.dim,
        "cmvn": opts.cmvn,
        "sample_rate": rate,
        "frame_shift": opts.frame_shift_ms / 1000,
        "frame_length": opts.frame_length_ms / 1000,
        "utterances": len(frames),
        "frames": int(sum(frames.values())),
        "label_levels": list(label_counts),
        "labelled": labelled,
        "dropped": dict(bad.reasons),
        "extraction_dropped": failed_before,
        "options": asdict(opts),
        "hash": opts.digest(),
        "inputs": inputs,
    }
    write_text(state_path, yaml.safe_dump(new_state, sort_keys=False))
    return {
        "utterances": len(frames),
        "dropped": len(bad),
        "frames": new_state["frames"],
        "dim": opts.dim,
        "labelled": labelled,
    }


def _features_complete(data_dir: Path, utts: list[str], opts: FeatureOptions) -> bool:
    """feats, utt2num_frames (and cmvn) hold exactly ``utts``: written by a run that completed."""
    return (
        _scp_keys(data_dir / "feats.scp") == utts
        and list(_table_or_empty(data_dir / "utt2num_frames")) == utts
        and (opts.cmvn == "none" or _scp_keys(data_dir / "cmvn.scp") is not None)
    )


def _table_or_empty(path: Path) -> dict[str, str]:
    return read_table(path) if path.is_file() else {}


def read_feature_state(data_dir: str | os.PathLike) -> dict:
    """The ``conf/features.yaml`` of a data dir; DataError telling the user to run the stage."""
    path = Path(data_dir) / STATE_FILE
    state = _read_state(path)
    if not state.get("hash"):
        raise DataError(f"{path}: missing or incomplete; run `snnasr features` for this set first")
    return state
