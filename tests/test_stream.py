"""Streaming equals the offline forward: every architecture, chunk sizes 1, 7 and whole, padded
offline batches, splicing look-ahead; refusals are one line; audio framing matches extraction."""

import numpy as np
import pytest
import torch
from test_evaluate import recipe  # noqa: F401  (the hand-made recipe fixture)

from snnasr.dataset import splice
from snnasr.evaluate import pad_batch
from snnasr.features import FeatureOptions, extract
from snnasr.io import ConfigError
from snnasr.models import build
from snnasr.models.registry import model_config
from snnasr.stream import AudioFrontEnd, Recognizer, check_streamable, stream_utterance

CASES = [
    ("lstm", {}),
    ("gru", {}),
    ("lif", {}),
    ("proposed", {"recurrent": True}),
    ("proposed", {"recurrent": False}),
    ("alif", {"b0": 0.05}),  # a low threshold, so the tiny untrained layer fires
    ("scsr", {}),
    ("proposed", {"readout": "integrator", "steps_per_frame": 2, "skip": True}),
    ("lif", {"scan_backend": "eager", "reset": "zero"}),
]
LENGTHS = (13, 9, 4)


def _trained(arch: str, extra: dict, n_in: int) -> torch.nn.Module:
    """A tiny float64 model whose BN statistics and quantiser ranges have been set, in eval mode."""
    torch.manual_seed(0)
    model = build(arch, model_config(arch, hidden=9, layers=2, **extra), n_in, 4).double()
    x = 3 * torch.randn(15, 4, n_in, dtype=torch.float64)
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(x, torch.ones(15, 4, dtype=torch.bool))
    return model.eval()


@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("arch, extra", CASES)
def test_stream_equals_offline_for_every_chunk_size(arch, extra, context):
    torch.manual_seed(1)
    feats = [3 * torch.randn(n, 5, dtype=torch.float64) for n in LENGTHS]
    model = _trained(arch, extra, 5 * (2 * context + 1))
    x, mask = pad_batch([splice(f, context) for f in feats])  # offline: one padded batch, as eval
    with torch.no_grad():
        out = model(x, mask)
    ref = torch.log_softmax(out.logits, -1)
    for h in out.layer_outputs:  # the spiking layers do fire, so state carry-over is exercised
        assert (h[out.step_mask] != 0).any()
    rec = Recognizer(model, context)
    assert rec.lookahead == context
    for b, f in enumerate(feats):
        for chunk in (1, 7, len(f)):
            logp, times = stream_utterance(rec, f, chunk)
            assert logp.shape == (len(f), 4) and len(times) == -(-len(f) // chunk) + 1
            assert torch.allclose(logp, ref[: len(f), b], atol=1e-10), (chunk, b)


def test_lookahead_emits_frames_after_context_frames_and_flushes_at_the_end():
    model = _trained("proposed", {}, 15)
    rec = Recognizer(model, context=1)
    f = torch.randn(6, 5, dtype=torch.float64)
    first = rec.accept_features(f[:1])
    assert len(first.labels) == 0  # frame 0 needs frame 1
    second = rec.accept_features(f[1:4])
    assert second.start == 0 and len(second.labels) == 3
    rest = rec.accept_features(f[4:])
    assert rest.start == 3 and len(rest.labels) == 2
    end = rec.finish()
    assert end.start == 5 and len(end.labels) == 1


def test_bidirectional_and_utterance_models_are_refused():
    model = build("lif", model_config("lif", hidden=4, bidirectional=True), 5, 3)
    with pytest.raises(ConfigError, match="bidirectional"):
        Recognizer(model)
    with pytest.raises(ConfigError, match="task: utterance"):
        check_streamable(build("lstm", model_config("lstm", hidden=4), 5, 3), "utterance")


@pytest.mark.parametrize("deltas", [False, True])
def test_audio_front_end_equals_offline_extraction_for_any_chunk(deltas):
    opts = FeatureOptions.load(num_bins=23, deltas=deltas)
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(8000 * 3 // 4) * 3000).astype(np.float32)
    offline = extract(samples, 8000, opts)
    for chunk in (80, 333, len(samples)):
        front = AudioFrontEnd(opts, 8000)
        assert front.lookahead == (4 if deltas else 0)
        parts = [front.accept(samples[i : i + chunk]) for i in range(0, len(samples), chunk)]
        streamed = np.concatenate([*parts, front.flush()])
        assert streamed.shape == offline.shape
        assert np.allclose(streamed, offline, atol=1e-4)


def test_audio_front_end_refuses_dither():
    with pytest.raises(ConfigError, match="dither"):
        AudioFrontEnd(FeatureOptions.load(dither=1.0), 8000)


def test_stream_command_reports_rtf_and_equals_eval(recipe, capsys):  # noqa: F811
    import json

    from test_evaluate import make_run

    from snnasr.stream import run_stream

    run = make_run(recipe, "proposed", readout="integrator")
    res = run_stream(run, recipe, "test", chunk=3, check=True, device="cpu")
    assert res["frames"] == 39 and res["utterances"] == 3 and res["lookahead_frames"] == 0
    assert res["real_time_factor"] > 0 and res["latency_ms"]["algorithmic"] == pytest.approx(30.0)
    assert res["check"]["labels_different"] == 0 and res["check"]["max_abs_log_posterior_diff"] < 1e-4
    assert json.loads((run / "stream_test" / "stream.json").read_text())["chunk_frames"] == 3
    assert "real-time factor" in capsys.readouterr().out
    feats_yaml = recipe / "data" / "test" / "conf" / "features.yaml"
    feats_yaml.write_text("hash: handmade\ncmvn: utt\n")
    with pytest.raises(ConfigError, match="CMVN per utterance"):
        run_stream(run, recipe, "test", device="cpu")
    feats_yaml.write_text("hash: handmade\ncmvn: speaker\n")
    bidir = make_run(recipe, "lif", name="lif_bidir", bidirectional=True)
    with pytest.raises(ConfigError, match="bidirectional"):
        run_stream(bidir, recipe, "test", device="cpu")
