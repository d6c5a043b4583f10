"""Streaming recognition: features (or audio) in, chunk by chunk; per-frame posteriors out.

A :class:`Recognizer` holds one stream.  Each :meth:`Recognizer.accept_features` (or
:meth:`~Recognizer.accept_audio`) call takes the next frames, runs them through the model from
where the previous chunk left it (:meth:`snnasr.models.registry.AcousticModel.forward_state`:
every layer's membranes, currents, traces and spikes, the quantisers' range state, the input
encoder's residual, the integrator readout's ``m``, LSTM/GRU ``(h, c)``) and returns the
log-posteriors and labels of every frame that is now final.  :meth:`~Recognizer.finish` ends
the stream.  The outputs are those of the offline forward over the whole utterance (which
``snnasr eval`` scores), for any chunk size, because every part is causal and frame-local at
inference: batch norm uses its running statistics, the quantisers their frozen range, dropout
is off.

Look-ahead: none for a unidirectional model; context splicing (``data.context`` = c) needs
frame t+c before frame t can be emitted, so the stream lags c frames (at the end the last frame
is replicated, as offline splicing does).  Refused, with one line: bidirectional models (the
backward direction needs the whole utterance), ``task: utterance`` (one decision from the whole
utterance), per-utterance CMVN (statistics of the whole utterance; per-speaker statistics, computed
beforehand from ``cmvn.scp``, are a fixed affine map per frame and stream exactly), and, for audio input, dithered features (random noise per utterance).

Audio goes through the recipe's own fbank/MFCC options (:func:`snnasr.features.extract`,
``snip_edges``): samples are buffered until a whole window is there, each frame is computed from
its own window only; deltas (Kaldi ``add-deltas``, ±4 frames with edge frames replicated) add 4
frames of look-ahead; the CMVN statistics of the utterance's key (``cmvn.scp``) are applied per
frame.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from snnasr.io import ConfigError

DELTA_ORDER, DELTA_WINDOW = 2, 2  # snnasr.features.add_deltas' defaults, as Kaldi's add-deltas

# The stream runs as this many identical batch rows: float32 GEMM kernels round a product of 1-3
# rows differently from one of more (measured on CPU: torch's GEMM below 4 rows, oneDNN at 1),
# which can flip a spike; with >= 4 rows every product rounds as in the offline batch.
ROWS = 4


class StreamOutput(NamedTuple):
    """The frames a chunk made final: frame indices ``start .. start+n-1`` of the stream."""

    start: int
    log_posteriors: Tensor  # [n, C], log-softmax of the logits
    labels: Tensor  # [n], argmax class ids


def check_streamable(model: torch.nn.Module, task: str = "frame") -> None:
    """ConfigError (one line) for a model or task that cannot be streamed exactly."""
    from snnasr.models.registry import Bidirectional

    if task == "utterance":
        raise ConfigError(
            "task: utterance decides once from the whole utterance, so it has no per-frame stream; "
            "stream a task: frame model"
        )
    for i, layer in enumerate(getattr(model, "layers", [])):
        if isinstance(layer, Bidirectional):
            raise ConfigError(
                f"layer {i + 1} is bidirectional: its backward direction needs the whole utterance, so it cannot "
                f"be streamed; train with model.bidirectional=false to stream"
            )
        if not hasattr(layer, "forward_state"):
            raise ConfigError(f"layer {i + 1} ({type(layer).__name__}) has no forward_state; it cannot be streamed")


@dataclass
class AudioFrontEnd:
    """Kaldi framing (``snip_edges``) over a sample stream: frames as soon as their window is
    complete; with deltas, a frame as soon as the ``order * window`` (4) frames after it are there."""

    options: Any  # snnasr.features.FeatureOptions
    sample_rate: int

    def __post_init__(self) -> None:
        from snnasr.labels import window_samples

        if self.options.dither > 0:
            raise ConfigError(
                f"features use dither={self.options.dither} (random noise per utterance): a stream cannot "
                f"reproduce them; stream the stored features instead (without --audio)"
            )
        self.window, self.shift = window_samples(
            self.sample_rate, self.options.frame_length_ms, self.options.frame_shift_ms
        )
        self.lookahead = DELTA_ORDER * DELTA_WINDOW if self.options.deltas else 0
        self.reset()

    def reset(self) -> None:
        self.buffer = np.zeros(0, dtype=np.float32)
        self.base: list[np.ndarray] = []  # frames before deltas, from index self.base_start on
        self.base_start = self.received = self.emitted = 0

    def accept(self, samples: np.ndarray) -> np.ndarray:
        """Features ``[n, D]`` of every frame that is now final."""
        from snnasr.features import extract

        self.buffer = np.concatenate((self.buffer, np.asarray(samples, dtype=np.float32)))
        if len(self.buffer) < self.window:
            return self._emit(False)
        n = 1 + (len(self.buffer) - self.window) // self.shift
        opts = dataclasses.replace(self.options, deltas=False)
        self.base.append(extract(self.buffer[: (n - 1) * self.shift + self.window], self.sample_rate, opts))
        self.received += n
        self.buffer = self.buffer[n * self.shift :]
        return self._emit(False)

    def flush(self) -> np.ndarray:
        """End of the audio: the frames the delta window was still waiting for."""
        return self._emit(True)

    def _emit(self, final: bool) -> np.ndarray:
        from snnasr.features import add_deltas

        last = self.received if final else self.received - self.lookahead
        if last <= self.emitted:
            return np.zeros((0, self.options.dim), dtype=np.float32)
        frames = np.concatenate(self.base) if len(self.base) > 1 else self.base[0]
        a, k = self.emitted, self.lookahead
        if k:
            # add_deltas clamps at the ends of what it is given: give it frames a-k .. last+k-1,
            # cut only where the utterance itself starts or (at the end) stops, so the clamp is the same.
            lo = max(0, a - k) - self.base_start
            part = add_deltas(frames[lo : last + k - self.base_start], DELTA_ORDER, DELTA_WINDOW)
            out = part[a - self.base_start - lo : last - self.base_start - lo].astype(np.float32)
        else:
            out = frames[a - self.base_start : last - self.base_start]
        self.emitted = last
        keep = max(0, last - k)
        self.base, self.base_start = [frames[keep - self.base_start :]], keep
        return out


class Recognizer:
    """One stream through a trained frame-level model (eval mode); see the module docstring.

    ``context``: the splicing the model was trained with (frames each side, look-ahead = c).
    ``cmvn``: a Kaldi ``2 x (D+1)`` CMVN stats matrix applied to every frame (None = the
    features arrive normalised); ``norm_vars`` as the recipe's ``data.norm_vars``.
    ``frontend``: for :meth:`accept_audio`.  Raises ConfigError for a model that cannot stream.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        context: int = 0,
        cmvn: np.ndarray | None = None,
        norm_vars: bool = False,
        frontend: AudioFrontEnd | None = None,
    ) -> None:
        check_streamable(model)
        if context < 0:
            raise ConfigError(f"context={context}: must be >= 0 frames")
        self.model: Any = model.eval()
        self.context, self.cmvn, self.norm_vars, self.frontend = context, cmvn, norm_vars, frontend
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.reset()

    @property
    def lookahead(self) -> int:
        """Frames a stream waits for beyond the frame it emits: the splicing context, plus the
        delta window of an audio front end."""
        return self.context + (self.frontend.lookahead if self.frontend is not None else 0)

    def reset(self) -> None:
        """Start a new stream: every state back at rest."""
        self.state: Any = None
        self.raw = torch.zeros(0, 0)  # raw frames from index self.raw_start on
        self.raw_start = 0
        self.received = 0  # frames received so far
        self.emitted = 0  # frames emitted so far
        if self.frontend is not None:
            self.frontend.reset()

    def accept_audio(self, samples: np.ndarray) -> StreamOutput:
        """The next samples (int16 range, the recipe's sample rate)."""
        if self.frontend is None:
            raise ConfigError("this Recognizer has no audio front end; give it frontend=AudioFrontEnd(...)")
        return self.accept_features(self.frontend.accept(samples))

    def accept_features(self, feats: np.ndarray | Tensor) -> StreamOutput:
        """The next frames ``[n, D]`` (n may be 0); returns the frames that are now final."""
        return self._advance(feats, final=False)

    def finish(self) -> StreamOutput:
        """End of the stream: the look-ahead's last frames (edge frame replicated, as offline)."""
        tail = self.frontend.flush() if self.frontend is not None else None
        return self._advance(tail, final=True)

    def _advance(self, feats: np.ndarray | Tensor | None, final: bool) -> StreamOutput:
        if feats is not None and len(feats):
            x = np.asarray(feats) if self.cmvn is not None else feats
            if self.cmvn is not None:
                from snnasr.dataset import apply_cmvn

                x = apply_cmvn(np.asarray(x), self.cmvn, self.norm_vars)
            x = torch.as_tensor(x, dtype=self.dtype)
            self.raw = x if self.raw.numel() == 0 else torch.cat((self.raw, x))
            self.received += len(x)
        last = self.received if final else self.received - self.context  # emit frames < last
        start = self.emitted
        if last <= start:
            return self._empty(start)
        c = self.context
        t = torch.arange(start, last)
        if c:
            idx = (t[:, None] + torch.arange(-c, c + 1)[None]).clamp(0, self.received - 1) - self.raw_start
            spliced = self.raw[idx].reshape(len(t), -1)
        else:
            spliced = self.raw[t - self.raw_start]
        x = spliced[:, None].to(self.device).expand(-1, ROWS, -1)
        mask = torch.ones(len(t), ROWS, dtype=torch.bool, device=self.device)
        with torch.no_grad():
            out, self.state = self.model.forward_state(x, mask, self.state)
        logp = torch.log_softmax(out.logits[:, 0], dim=-1).cpu()
        self.emitted = last
        keep_from = max(0, last - c)  # frames the next chunk's splicing may still read
        self.raw, self.raw_start = self.raw[keep_from - self.raw_start :], keep_from
        return StreamOutput(start, logp, logp.argmax(-1))

    def _empty(self, start: int) -> StreamOutput:
        n_out = int(self.model.n_out)
        return StreamOutput(start, torch.zeros(0, n_out, dtype=self.dtype), torch.zeros(0, dtype=torch.long))


def stream_utterance(rec: Recognizer, feats: Any, chunk: int, audio: bool = False) -> tuple[Tensor, list[float]]:
    """Feed one utterance in chunks of ``chunk`` frames (or samples, ``audio``); its
    log-posteriors ``[T, C]`` and the compute time of each call (seconds, the final flush last)."""
    rec.reset()
    parts, times = [], []
    for i in range(0, len(feats), chunk):
        t0 = time.perf_counter()
        out = rec.accept_audio(feats[i : i + chunk]) if audio else rec.accept_features(feats[i : i + chunk])
        times.append(time.perf_counter() - t0)
        parts.append(out.log_posteriors)
    t0 = time.perf_counter()
    parts.append(rec.finish().log_posteriors)
    times.append(time.perf_counter() - t0)
    return torch.cat(parts), times


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run_stream(
    exp: str | Path,
    recipe_dir: str | Path,
    set_name: str = "test",
    chunk: int = 1,
    audio: bool = False,
    limit: int | None = None,
    check: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Stream every utterance of ``data/<set>`` through ``exp``'s model, ``chunk`` frames at a time.

    Reports the real-time factor (compute time / audio duration), the compute latency of each
    chunk, the algorithmic latency (chunk + look-ahead), frame accuracy of the streamed labels
    and, with ``check``, the largest difference to the offline forward of the whole utterance.
    Writes ``exp/<run>/stream_<set>/stream.json``.  Raises ConfigError / DataError (one line).
    """
    import json

    from snnasr.checkpoint import load_model
    from snnasr.dataset import UtteranceDataset
    from snnasr.evaluate import _check_labels, exp_and_set
    from snnasr.features import FeatureOptions, read_feature_state
    from snnasr.io import DataError, write_text
    from snnasr.lang import load_lang

    if chunk < 1:
        raise ConfigError(f"--chunk={chunk}: must be at least 1 frame")
    recipe_dir = Path(recipe_dir)
    exp_dir, data_dir = exp_and_set(exp, recipe_dir, set_name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, cfg, meta = load_model(exp_dir, device)
    check_streamable(model, getattr(cfg, "task", "frame"))
    lang = load_lang(recipe_dir / "data" / "lang")
    level = meta["level"]
    _check_labels(data_dir, set_name, level, lang, int(meta.get("n_out", model.n_out)))
    state = read_feature_state(data_dir)
    if state.get("cmvn") == "utt":
        raise ConfigError(
            f"{data_dir}/conf/features.yaml: CMVN per utterance normalises every frame with statistics of the "
            f"whole utterance, which a stream does not have yet; compute features with --cmvn speaker (or none) "
            f"and train on them to stream"
        )
    shift = float(state.get("frame_shift", 0.01))
    context = cfg.data.context
    data = UtteranceDataset(data_dir, level=level, norm_vars=cfg.data.norm_vars, context=0, lang_dir=lang.dir)
    if data.dim * (2 * context + 1) != int(meta["n_in"]):
        raise DataError(
            f"{data_dir}/feats.scp: {data.dim}-dim features (x{2 * context + 1} spliced) but the model expects "
            f"{meta['n_in']}; compute features with the options used for training"
        )
    frontend = None
    wavs: dict[str, str] = {}
    cmvn: dict[str, np.ndarray] = {}
    utt2key: dict[str, str] = {}
    if audio:
        from snnasr.data.datadir import read_table
        from snnasr.kaldi.ark import read_mat_scp

        if "options" not in state or state.get("type") not in ("fbank", "mfcc"):
            raise DataError(
                f"{data_dir}/conf/features.yaml: these features were not made by snnasr features "
                f"(type {state.get('type')!r}), so their audio front end is unknown; stream them without --audio"
            )
        frontend = AudioFrontEnd(FeatureOptions(**state["options"]), int(state["sample_rate"]))
        wavs = read_table(data_dir / "wav.scp")
        if state.get("cmvn", "none") != "none":
            cmvn = {k: np.asarray(v, dtype=np.float64) for k, v in read_mat_scp(data_dir / "cmvn.scp")}
            utt2key = read_table(data_dir / "utt2spk") if state["cmvn"] == "speaker" else {}
    rec = Recognizer(model, context, norm_vars=cfg.data.norm_vars, frontend=frontend)
    n = len(data) if limit is None else min(limit, len(data))
    correct = frames = 0
    compute, latencies = 0.0, []
    streamed: dict[int, Tensor] = {}
    for i in range(n):
        uttid, feats, labels = data[i]
        if audio:
            from snnasr.audio import read_audio, wav_path

            samples, _ = read_audio(wav_path(wavs[uttid], f"{data_dir}/wav.scp"), int(state["sample_rate"]))
            rec.cmvn = cmvn.get(utt2key.get(uttid, uttid)) if cmvn else None
            logp, times = stream_utterance(rec, samples, chunk * frontend.shift, audio=True)  # type: ignore[union-attr]
        else:
            logp, times = stream_utterance(rec, feats, chunk)
        if len(logp) != len(labels):
            raise DataError(
                f"{uttid}: the stream gave {len(logp)} frames, the features have {len(labels)}; "
                f"the audio does not match the stored features (re-run snnasr features)"
            )
        compute += sum(times)
        latencies.extend(times[:-1] or times)
        pred = logp.argmax(-1)
        valid = labels >= 0
        correct += int((pred[valid] == labels[valid]).sum())
        frames += len(labels)
        if check:
            streamed[i] = logp
    duration = frames * shift
    results: dict[str, Any] = {
        "run": exp_dir.name,
        "set": set_name,
        "input": "audio" if audio else "features",
        "utterances": n,
        "frames": frames,
        "chunk_frames": chunk,
        "lookahead_frames": rec.lookahead,
        "frame_shift_s": shift,
        "audio_s": duration,
        "compute_s": compute,
        "real_time_factor": compute / duration if duration else float("nan"),
        "latency_ms": {
            "algorithmic": 1000 * (chunk + rec.lookahead) * shift,
            "compute_mean": 1000 * float(np.mean(latencies)) if latencies else float("nan"),
            "compute_p50": 1000 * _percentile(latencies, 50),
            "compute_p95": 1000 * _percentile(latencies, 95),
            "compute_max": 1000 * max(latencies, default=float("nan")),
        },
        "frame_accuracy": {level: correct / frames if frames else float("nan")},
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if check:
        results["check"] = _check_offline(model, data, streamed, context)
    write_text(exp_dir / f"stream_{set_name}" / "stream.json", json.dumps(results, indent=2) + "\n")
    _print(results)
    return results


def _check_offline(model: torch.nn.Module, data: Any, streamed: dict[int, Tensor], context: int) -> dict[str, Any]:
    """The streamed log-posteriors against ``snnasr eval``'s own batched forward of the same utterances."""
    from snnasr.dataset import splice
    from snnasr.evaluate import DEFAULT_BATCH_FRAMES, _forward

    order = sorted(streamed)
    feats = [splice(data[i][1], context) for i in order]
    diff, labels = 0.0, 0

    def compare(idx: list[int], x: Tensor, mask: Tensor, out: Any) -> None:
        nonlocal diff, labels
        ref = torch.log_softmax(out.logits, -1).cpu()
        for b, k in enumerate(idx):
            logp = streamed[order[k]]
            r = ref[: len(logp), b].to(logp.dtype)
            diff = max(diff, float((r - logp).abs().max()))
            labels += int((r.argmax(-1) != logp.argmax(-1)).sum())

    _forward(model, feats, DEFAULT_BATCH_FRAMES, "offline check", compare)
    return {
        "reference": "snnasr eval's batched forward",
        "max_abs_log_posterior_diff": diff,
        "labels_different": labels,
    }


def _print(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    acc = ", ".join(f"{lv} {100 * a:.2f}%" for lv, a in r["frame_accuracy"].items())
    print(
        f"streamed {r['utterances']} utterances of {r['set']} ({r['frames']} frames, {r['audio_s']:.1f} s of audio) "
        f"from {r['input']}, chunks of {r['chunk_frames']} frames, look-ahead {r['lookahead_frames']} frames, "
        f"{r['device']}, {r['threads']} thread(s)"
    )
    print(
        f"real-time factor {r['real_time_factor']:.4f}; latency per chunk: algorithmic {lat['algorithmic']:.0f} ms, "
        f"compute mean {lat['compute_mean']:.2f} ms, p50 {lat['compute_p50']:.2f}, p95 {lat['compute_p95']:.2f}, "
        f"max {lat['compute_max']:.2f} ms"
    )
    line = f"frame accuracy of the streamed labels: {acc}"
    if "check" in r:
        c = r["check"]
        line += (
            f"; vs eval's batched forward: max |log-posterior difference| {c['max_abs_log_posterior_diff']:.2e}, "
            f"{c['labels_different']} labels different"
        )
    print(line)
