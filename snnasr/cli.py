"""The ``snnasr`` command line: one subcommand per recipe stage, in pipeline order.

Each command only parses options and calls one library function; user mistakes surface as
``snnasr <stage>: <message>`` on stderr with exit code 1, never as a traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import click

from snnasr.io import SnnasrError

DEBUG = bool(os.environ.get("SNNASR_DEBUG"))  # `snnasr --debug ...` or SNNASR_DEBUG=1: tracebacks

RECIPE_DIR = click.option(
    "-d",
    "--recipe-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Recipe directory holding data/, exp/ and conf/.",
)


class ArchChoice(click.Choice):
    """The registered architectures, read on first use: the registry imports torch, and the
    CLI must start without it."""

    def __init__(self) -> None:
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        from snnasr.models.registry import arch_names

        return arch_names()

    @choices.setter
    def choices(self, value: object) -> None:
        pass


BAD_UTTERANCES = [
    click.option(
        "--max-bad-fraction",
        type=float,
        default=0.05,
        show_default=True,
        help="Bad utterances are dropped by name (listed in data/<set>/dropped); fail when more than "
        "this fraction of a set is bad (Kaldi make_fbank.sh: 5 %).",
    ),
    click.option("--strict", is_flag=True, help="Fail at the first bad utterance instead of dropping it."),
]


def bad_utterance_options(f):
    """The --max-bad-fraction/--strict pair of every stage that drops bad utterances."""
    for option in reversed(BAD_UTTERANCES):
        f = option(f)
    return f


class OrderedGroup(click.Group):
    """Lists commands in the order they were added: the pipeline order."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=OrderedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snnasr")
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error instead of its one line.")
def cli(debug: bool) -> None:
    """Spiking-neural-network speech recognition recipes, Kaldi-style, without Kaldi.

    Stages read and write files under a recipe directory (data/<set>/, data/lang/, exp/<run>/).
    """
    global DEBUG
    DEBUG = debug or DEBUG


def _echo_counts(title: str, counts: dict) -> None:
    click.echo(f"{title}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--speakers", type=int, default=None, help="Number of speakers (default: every voice).")
@click.option("--utts-per-speaker", type=int, default=None, help="Sentences per speaker.")
@click.option("--seed", type=int, default=1, show_default=True)
def synth(out: Path, speakers: int | None, utts_per_speaker: int | None, seed: int) -> None:
    """Generate the embedded synthetic TIMIT-layout corpus (espeak-ng) in OUT."""
    from snnasr.data.synth import synthesize

    counts = synthesize(out, speakers=speakers, utts_per_speaker=utts_per_speaker, seed=seed)
    _echo_counts(f"wrote {out}", counts)


@cli.group(cls=OrderedGroup)
def prep() -> None:
    """Prepare Kaldi data dirs (data/<set>/, data/lang/) from a corpus."""


@prep.command("timit")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option(
    "--dev-speakers",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File with one dev speaker id per line (default: the standard 50).",
)
@click.option(
    "--test-speakers",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File with one test speaker id per line (default: the 24-speaker core test).",
)
@bad_utterance_options
@RECIPE_DIR
def prep_timit(
    corpus: Path,
    dev_speakers: Path | None,
    test_speakers: Path | None,
    max_bad_fraction: float,
    strict: bool,
    recipe_dir: Path,
) -> None:
    """TIMIT in the LDC layout (real, or made by `snnasr synth`)."""
    from snnasr.data.timit import prepare_timit

    counts = prepare_timit(
        corpus,
        recipe_dir,
        dev_speakers=dev_speakers,
        test_speakers=test_speakers,
        max_bad_fraction=max_bad_fraction,
        strict=strict,
    )
    _echo_counts("utterances", counts)


@prep.command("librispeech")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--sets", default="train-clean-100,dev-clean,test-clean", show_default=True)
@click.option(
    "--textgrids",
    type=click.Path(path_type=Path),
    default=None,
    help="Montreal Forced Aligner output dir (phones tier) for frame labels.",
)
@bad_utterance_options
@RECIPE_DIR
def prep_librispeech(
    corpus: Path, sets: str, textgrids: Path | None, max_bad_fraction: float, strict: bool, recipe_dir: Path
) -> None:
    """LibriSpeech (FLAC + trans.txt); labels from MFA TextGrids or later `prep kaldi`."""
    from snnasr.data.librispeech import prepare_librispeech

    counts = prepare_librispeech(
        corpus,
        recipe_dir,
        sets=sets.split(","),
        textgrids=textgrids,
        max_bad_fraction=max_bad_fraction,
        strict=strict,
    )
    _echo_counts("utterances", counts)


@prep.command("kaldi")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Existing Kaldi data dir (e.g. data/train).",
)
@click.option(
    "--ali",
    "ali_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Kaldi alignment dir with final.mdl (or N.mdl) and ali.*.gz.",
)
@click.option(
    "--lang",
    "lang_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Kaldi lang dir with phones.txt (default: <ali>/../../data/lang or data/lang).",
)
@click.option(
    "--targets",
    type=click.Choice(["pdf", "phone"]),
    default="pdf",
    show_default=True,
    help="Default training level; both levels are written.",
)
@RECIPE_DIR
def prep_kaldi(data_dir: Path, ali_dir: Path, lang_dir: Path | None, targets: str, recipe_dir: Path) -> None:
    """Per-frame pdf and phone labels from Kaldi alignments (no Kaldi binaries)."""
    from snnasr.kaldi.alignments import prepare_kaldi

    counts = prepare_kaldi(data_dir, ali_dir, recipe_dir, lang_dir=lang_dir, targets=targets)
    _echo_counts("labelled utterances", counts)


@prep.command("lhotse")
@click.argument("recordings", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("supervisions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "set_name", required=True, help="Name of the data dir to write (data/<set>).")
@RECIPE_DIR
def prep_lhotse(recordings: Path, supervisions: Path, set_name: str, recipe_dir: Path) -> None:
    """A data dir from Lhotse RecordingSet + SupervisionSet manifests (phone alignments too)."""
    from snnasr.lhotse_io import prepare_lhotse

    _echo_counts(f"data/{set_name}", prepare_lhotse(recordings, supervisions, recipe_dir, set_name))


@prep.command("yesno")
@click.argument("corpus", type=click.Path(path_type=Path))
@bad_utterance_options
@RECIPE_DIR
def prep_yesno(corpus: Path, max_bad_fraction: float, strict: bool, recipe_dir: Path) -> None:
    """Kaldi's yes/no corpus (a waves_yesno/ folder): train_yesno 31, test_yesno 29."""
    from snnasr.data.yesno import prepare_yesno

    counts = prepare_yesno(corpus, recipe_dir, max_bad_fraction=max_bad_fraction, strict=strict)
    _echo_counts("utterances", counts)


@prep.command("fsdd")
@click.argument("corpus", type=click.Path(path_type=Path))
@bad_utterance_options
@RECIPE_DIR
def prep_fsdd(corpus: Path, max_bad_fraction: float, strict: bool, recipe_dir: Path) -> None:
    """Free Spoken Digit Dataset (recordings/): train 2400, dev 300, test 300; word labels."""
    from snnasr.data.fsdd import prepare_fsdd

    counts = prepare_fsdd(corpus, recipe_dir, max_bad_fraction=max_bad_fraction, strict=strict)
    _echo_counts("utterances", counts)


@cli.command()
@click.argument("data_dirs", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--sets", default="train,dev,test", show_default=True, help="Comma-separated sets under -d (without DATA_DIRS)."
)
@click.option(
    "--fix",
    is_flag=True,
    help="Write a repaired copy <dir>_fixed (bad utterances dropped and listed in its `dropped`, tables "
    "sorted, spk2utt regenerated), as Kaldi's fix_data_dir.sh.",
)
@RECIPE_DIR
def validate(data_dirs: tuple[Path, ...], sets: str, fix: bool, recipe_dir: Path) -> None:
    """Check data dirs (DATA_DIRS, or --sets under -d) as Kaldi's validate_data_dir.sh does."""
    from snnasr.data.datadir import fix_data_dir, validate_data_dir

    dirs = list(data_dirs) or [recipe_dir / "data" / name for name in sets.split(",")]
    for d in dirs:
        if fix:
            out = d.with_name(d.name + "_fixed")
            counts = fix_data_dir(d, out)
            _echo_counts(f"wrote {out}", counts)
        else:
            _echo_counts(str(d), validate_data_dir(d))


@cli.command()
@click.option("--sets", default="train,dev,test", show_default=True, help="Comma-separated data sets.")
@click.option(
    "--type",
    "ftype",
    type=click.Choice(["fbank", "mfcc"]),
    default="fbank",
    show_default=True,
    help="Log mel filterbank or MFCC (Kaldi compute-fbank-feats / compute-mfcc-feats).",
)
@click.option("--num-bins", type=int, default=None, help="Mel bins (default 40 fbank, 23 MFCC).")
@click.option("--num-ceps", type=int, default=13, show_default=True, help="Cepstra (MFCC only).")
@click.option("--deltas/--no-deltas", default=False, show_default=True, help="Append deltas and delta-deltas.")
@click.option(
    "--cmvn",
    type=click.Choice(["speaker", "utt", "none"]),
    default="speaker",
    show_default=True,
    help="Key of the CMVN stats (applied when training reads the features).",
)
@click.option(
    "--dither",
    type=float,
    default=0.0,
    show_default=True,
    help="Kaldi dither (Kaldi's default is 1.0; 0 keeps features deterministic).",
)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Parallel workers.")
@click.option("--force", is_flag=True, help="Recompute even when conf/features.yaml says the set is up to date.")
@bad_utterance_options
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML of feature options (type, num_bins, num_ceps, deltas, cmvn, dither, frame_length_ms, "
    "frame_shift_ms, low_freq, high_freq, ...); options given on the command line win.",
)
@RECIPE_DIR
@click.pass_context
def features(
    ctx: click.Context,
    sets: str,
    ftype: str,
    num_bins: int | None,
    num_ceps: int,
    deltas: bool,
    cmvn: str,
    dither: float,
    jobs: int,
    force: bool,
    max_bad_fraction: float,
    strict: bool,
    config_path: Path | None,
    recipe_dir: Path,
) -> None:
    """Kaldi-compatible fbank/MFCC, CMVN stats and frame labels for each set.

    Writes data/<set>/{feats,cmvn}.{ark,scp}, utt2num_frames, frame_shift, labels_<level>.{ark,scp}
    (when phone_segments exists) and conf/features.yaml last; a set whose features.yaml matches
    the options and inputs is skipped. Dither defaults to 0 for reproducibility (Kaldi: 1.0).
    """
    from click.core import ParameterSource

    from snnasr.features import FeatureOptions, make_features

    given = {
        name: value
        for name, value in dict(
            ftype=ftype, num_bins=num_bins, num_ceps=num_ceps, deltas=deltas, cmvn=cmvn, dither=dither
        ).items()
        if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
    }
    opts = FeatureOptions.load(config_path, **given)
    for name in sets.split(","):
        counts = make_features(
            recipe_dir / "data" / name, opts, jobs=jobs, max_bad_fraction=max_bad_fraction, strict=strict, force=force
        )
        _echo_counts(f"data/{name}", counts)


@cli.command()
@click.option(
    "--arch",
    type=ArchChoice(),
    default=None,
    help="Architecture (overrides model.arch of the config).",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--exp", "exp_name", default=None, help="Run name under exp/ (default: the arch).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint of this run.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: CUDA when available.")
@click.option("--tensorboard", is_flag=True, help="Also log to exp/<run>/tensorboard/ (log.tensorboard=true).")
@click.argument("overrides", nargs=-1)
@RECIPE_DIR
def train(
    arch: str | None,
    config_path: Path | None,
    exp_name: str | None,
    resume: bool,
    device: str | None,
    tensorboard: bool,
    overrides: tuple[str, ...],
    recipe_dir: Path,
) -> None:
    """Train a model on data/train, select on data/dev; OVERRIDES are key=value (model.hidden=128).

    Several GPUs or machines: launch under torchrun (torchrun --nproc_per_node N -m snnasr train ...).
    """
    from snnasr.train import run_training

    run_training(
        recipe_dir,
        arch=arch,
        config_path=config_path,
        exp_name=exp_name,
        resume=resume,
        device=device,
        overrides=(*overrides, "log.tensorboard=true") if tensorboard else overrides,
    )


@cli.command("eval")
@click.argument("exp", type=click.Path(path_type=Path))
@click.option("--set", "set_name", default="test", show_default=True)
@click.option("--report-ops", is_flag=True, help="Count MACs/ACs per frame from real activations.")
@click.option(
    "--energy", type=click.Choice(["45nm-fp32", "45nm-fp16", "45nm-int8"]), default="45nm-fp32", show_default=True
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
@click.option(
    "--ops-convention",
    type=click.Choice(["honest", "official"]),
    default="honest",
    show_default=True,
    help="official = the seed code's gated-SNN formula (its quirk included), for comparison.",
)
@click.option(
    "--smooth",
    type=int,
    default=1,
    show_default=True,
    help="Majority filter over N frames before collapse PER (1 = off).",
)
@click.option(
    "--encoder-ops",
    type=click.Choice(["counted", "free"]),
    default="counted",
    show_default=True,
    help="counted = the SNNs' sigma-delta input encoder's own work is in the op count; free = as the seed.",
)
@click.option(
    "--min-dur", type=int, default=3, show_default=True, help="Decoder: minimum phone duration in frames (>= 1)."
)
@click.option(
    "--sparse", is_flag=True, help="Event-driven spiking layers (only non-zero inputs multiply); MACs executed."
)
@RECIPE_DIR
def eval_(
    exp: Path,
    set_name: str,
    report_ops: bool,
    energy: str,
    device: str | None,
    ops_convention: str,
    smooth: int,
    encoder_ops: str,
    min_dur: int,
    sparse: bool,
    recipe_dir: Path,
) -> None:
    """Evaluate EXP (exp/<run>) on a set: accuracy, decoded and collapse PER, % zeros, ops."""
    from snnasr.evaluate import run_evaluation

    run_evaluation(
        exp,
        recipe_dir,
        set_name=set_name,
        report_ops=report_ops,
        energy=energy,
        device=device,
        ops_convention=ops_convention,
        smooth_window=smooth,
        encoder_ops=encoder_ops,
        min_dur=min_dur,
        sparse=sparse,
    )


@cli.command()
@click.argument("exp", type=click.Path(path_type=Path))
@click.option("--set", "set_name", default="test", show_default=True)
@click.option("--chunk", type=click.IntRange(min=1), default=1, show_default=True, help="Frames per chunk.")
@click.option("--audio", is_flag=True, help="Stream the set's audio through its fbank/MFCC options, not its features.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N utterances.")
@click.option("--check", is_flag=True, help="Also compare every frame with the offline forward of the whole utterance.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
@RECIPE_DIR
def stream(
    exp: Path,
    set_name: str,
    chunk: int,
    audio: bool,
    limit: int | None,
    check: bool,
    device: str | None,
    recipe_dir: Path,
) -> None:
    """Stream a set through EXP chunk by chunk: real-time factor, latency per chunk, accuracy."""
    from snnasr.stream import run_stream

    run_stream(exp, recipe_dir, set_name, chunk=chunk, audio=audio, limit=limit, check=check, device=device)


@cli.command()
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output dir (default: <recipe>/exp)."
)
@RECIPE_DIR
def report(runs: tuple[Path, ...], out: Path | None, recipe_dir: Path) -> None:
    """Collect eval results into report.md/.csv and plots."""
    from snnasr.report import build_report

    build_report(recipe_dir, runs=list(runs), out_dir=out)


@cli.command()
@click.option("--archs", default=None, help="Comma-separated variants (default: all; lstm is always run).")
@click.option("--hidden", type=click.IntRange(min=1), default=550, show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--frames", type=click.IntRange(min=1), default=800, show_default=True, help="Sequence length.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: CUDA when available.")
@click.option(
    "--backend", "backends", default="native,fused,eager", show_default=True, help="Scan backends of the SNNs."
)
@click.option("--padded", is_flag=True, help="Lengths spread over [frames/2, frames], as real batches.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option(
    "--time-chunk", type=click.IntRange(min=0), default=0, help="Fused scans: recompute in chunks of K frames."
)
@click.option(
    "--sparse",
    "sparse_exp",
    type=click.Path(path_type=Path),
    default=None,
    help="Instead: inference of this trained run (exp/<run>) on --set, dense vs event-driven.",
)
@click.option("--set", "set_name", default="test", show_default=True, help="With --sparse: the set.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="With --sparse: the first N utterances.")
@RECIPE_DIR
def bench(
    archs: str | None,
    hidden: int,
    layers: int,
    frames: int,
    batch: int,
    device: str | None,
    backends: str,
    padded: bool,
    repeats: int,
    as_json: bool,
    time_chunk: int,
    sparse_exp: Path | None,
    set_name: str,
    limit: int | None,
    recipe_dir: Path,
) -> None:
    """Training/inference frames/s and peak memory of each architecture and backend vs nn.LSTM."""
    if sparse_exp is not None:
        from snnasr.sparse import run_sparse_bench

        run_sparse_bench(sparse_exp, recipe_dir, set_name, repeats, limit, device=device, as_json=as_json)
        return
    from snnasr.bench import run_bench

    run_bench(
        archs=[a for a in archs.split(",") if a] if archs else None,
        hidden=hidden,
        layers=layers,
        frames=frames,
        batch=batch,
        device=device,
        backends=[b for b in backends.split(",") if b],
        padded=padded,
        repeats=repeats,
        as_json=as_json,
        time_chunk=time_chunk,
    )


@cli.command()
@click.argument("exp", type=click.Path(path_type=Path))
@click.option("--set", "set_name", default="test", show_default=True)
@click.option("--utt", required=True, help="Utterance id (a key of the set's feats.scp).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG to write (default: <exp>/plots/<set>_<utt>.png).",
)
@RECIPE_DIR
def plot(exp: Path, set_name: str, utt: str, out: Path | None, recipe_dir: Path) -> None:
    """One utterance: features, each layer's spikes, posteriorgram, reference vs decoded segments."""
    from snnasr.utt_plot import plot_utterance

    click.echo(f"wrote {plot_utterance(exp, recipe_dir, set_name, utt, out)}")


@cli.group(cls=OrderedGroup)
def export() -> None:
    """Export a trained model or a data dir to other toolkits' formats."""


@export.command("nir")
@click.argument("exp", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dt", type=float, default=0.01, show_default=True, help="Time step in seconds (the frame shift), in metadata."
)
@RECIPE_DIR
def export_nir_(exp: Path, out: Path, dt: float, recipe_dir: Path) -> None:
    """EXP's SNN as a NIR graph (HDF5) for neuromorphic hardware; refuses what NIR cannot express."""
    from snnasr.nir_export import export_nir

    _echo_counts(f"wrote {out}", export_nir(exp, out, recipe_dir=recipe_dir, dt=dt))


@export.command("lhotse")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def export_lhotse_(data_dir: Path, out_dir: Path) -> None:
    """DATA_DIR as Lhotse manifests in OUT_DIR: <set>_recordings / <set>_supervisions .jsonl.gz."""
    from snnasr.lhotse_io import export_lhotse

    _echo_counts(f"wrote {out_dir / data_dir.name}_*.jsonl.gz", export_lhotse(data_dir, out_dir))


def _stage_name(argv: list[str]) -> str:
    """The (sub)command words of argv, e.g. 'prep timit', to prefix error lines."""
    words = [a for a in argv[:2] if not a.startswith("-")]
    if words[:1] not in (["prep"], ["export"]):
        words = words[:1]
    return " ".join(words) or "snnasr"


# What to do about an OSError, by errno (the message names the file and the error already).
_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space and re-run (completed outputs are kept, nothing half-written is)",
    errno.EDQUOT: "the disk quota is exceeded: free space and re-run",
    errno.EROFS: "the file system is read-only: choose a writable recipe dir with -d",
    errno.EACCES: "permission denied: check the owner and mode of the path, or choose another -d",
    errno.EPERM: "operation not permitted: check the owner and mode of the path, or choose another -d",
    errno.ENOTDIR: "a component of the path is a file, not a directory: check the -d and path arguments",
    errno.EISDIR: "the path is a directory where a file was expected: check the arguments",
    errno.ENOENT: "no such file or directory: check the path",
    errno.EIO: "input/output error: the disk or network file system failed; check it and re-run",
}


def _one_line(e: BaseException) -> str:
    """The one-line message of an error the library did not turn into a SnnasrError itself."""
    if isinstance(e, OSError):
        what = e.strerror or str(e)
        where = ", ".join(str(f) for f in (e.filename, e.filename2) if f is not None) or "?"
        return f"{where}: {what}; {_OS_HINTS.get(e.errno or 0, 'check the path and re-run')}"
    if isinstance(e, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({e.reason} at byte {e.start}); re-save it as UTF-8 (re-run with --debug to see which)"
    if isinstance(e, EOFError):
        return "a file ended early (truncated or empty); re-run with --debug to see which, then restore or re-make it"
    return (
        f"internal error {type(e).__name__}: {str(e).splitlines()[0] if str(e) else '(no message)'}; "
        f"re-run with --debug for the traceback and report it"
    )


def main() -> None:
    """Run the CLI; every error is one line ``snnasr <stage>: ...`` and exit code 1 (``--debug``: traceback)."""
    stage = _stage_name([a for a in sys.argv[1:] if a != "--debug"])
    try:
        code = cli.main(prog_name="snnasr", standalone_mode=False)
    except click.ClickException as e:  # usage errors: bad option values, missing arguments
        if DEBUG:
            raise
        click.echo(f"snnasr {stage}: {e.format_message().rstrip('.')}; see snnasr {stage} --help", err=True)
        sys.exit(e.exit_code)
    except click.Abort as e:  # click turns Ctrl-C and EOFError into Abort
        if isinstance(e.__cause__, EOFError) and not DEBUG:
            click.echo(f"snnasr {stage}: {_one_line(e.__cause__)}", err=True)
            sys.exit(1)
        click.echo(f"snnasr {stage}: aborted", err=True)
        sys.exit(130)
    except SnnasrError as e:
        if DEBUG:
            raise
        click.echo(f"snnasr {stage}: {e}", err=True)
        sys.exit(1)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        if DEBUG:
            raise
        click.echo(f"snnasr {stage}: {_one_line(e)}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
