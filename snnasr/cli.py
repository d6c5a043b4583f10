"""The ``snnasr`` command line: one subcommand per recipe stage, in pipeline order.

Each command only parses options and calls one library function; user mistakes surface as
``snnasr <stage>: <message>`` on stderr with exit code 1, never as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from snnasr.io import SnnasrError

RECIPE_DIR = click.option(
    "-d",
    "--recipe-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Recipe directory holding data/, exp/ and conf/.",
)


class OrderedGroup(click.Group):
    """Lists commands in the order they were added: the pipeline order."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=OrderedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snnasr")
def cli() -> None:
    """Spiking-neural-network speech recognition recipes, Kaldi-style, without Kaldi.

    Stages read and write files under a recipe directory (data/<set>/, data/lang/, exp/<run>/).
    """


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
@RECIPE_DIR
def prep_timit(corpus: Path, dev_speakers: Path | None, test_speakers: Path | None, recipe_dir: Path) -> None:
    """TIMIT in the LDC layout (real, or made by `snnasr synth`)."""
    from snnasr.data.timit import prepare_timit

    counts = prepare_timit(corpus, recipe_dir, dev_speakers=dev_speakers, test_speakers=test_speakers)
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
@RECIPE_DIR
def prep_librispeech(corpus: Path, sets: str, textgrids: Path | None, recipe_dir: Path) -> None:
    """LibriSpeech (FLAC + trans.txt); labels from MFA TextGrids or later `prep kaldi`."""
    from snnasr.data.librispeech import prepare_librispeech

    counts = prepare_librispeech(corpus, recipe_dir, sets=sets.split(","), textgrids=textgrids)
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


@prep.command("yesno")
@click.argument("corpus", type=click.Path(path_type=Path))
@RECIPE_DIR
def prep_yesno(corpus: Path, recipe_dir: Path) -> None:
    """Kaldi's yes/no corpus (a waves_yesno/ folder): train_yesno 31, test_yesno 29."""
    from snnasr.data.yesno import prepare_yesno

    counts = prepare_yesno(corpus, recipe_dir)
    _echo_counts("utterances", counts)


@prep.command("fsdd")
@click.argument("corpus", type=click.Path(path_type=Path))
@RECIPE_DIR
def prep_fsdd(corpus: Path, recipe_dir: Path) -> None:
    """Free Spoken Digit Dataset (recordings/): train 2400, dev 300, test 300; word labels."""
    from snnasr.data.fsdd import prepare_fsdd

    counts = prepare_fsdd(corpus, recipe_dir)
    _echo_counts("utterances", counts)


@cli.command()
@click.option("--sets", default="train,dev,test", show_default=True, help="Comma-separated data sets.")
@RECIPE_DIR
def validate(sets: str, recipe_dir: Path) -> None:
    """Check data dirs as Kaldi's validate_data_dir.sh does."""
    from snnasr.data.datadir import validate_data_dir

    for name in sets.split(","):
        _echo_counts(f"data/{name}", validate_data_dir(recipe_dir / "data" / name))


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
@click.option("--jobs", type=int, default=1, show_default=True, help="Parallel workers over utterances.")
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
        _echo_counts(f"data/{name}", make_features(recipe_dir / "data" / name, opts, jobs=jobs))


@cli.command()
@click.option(
    "--arch",
    type=click.Choice(["lstm", "gru", "lif", "proposed"]),
    default=None,
    help="Architecture (overrides model.arch of the config).",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--exp", "exp_name", default=None, help="Run name under exp/ (default: the arch).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint of this run.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: CUDA when available.")
@click.argument("overrides", nargs=-1)
@RECIPE_DIR
def train(
    arch: str | None,
    config_path: Path | None,
    exp_name: str | None,
    resume: bool,
    device: str | None,
    overrides: tuple[str, ...],
    recipe_dir: Path,
) -> None:
    """Train a model on data/train, select on data/dev; OVERRIDES are key=value (model.hidden=128)."""
    from snnasr.train import run_training

    run_training(
        recipe_dir,
        arch=arch,
        config_path=config_path,
        exp_name=exp_name,
        resume=resume,
        device=device,
        overrides=overrides,
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
    "--smooth", type=int, default=1, show_default=True, help="Majority filter over N frames before PER (1 = off)."
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
    recipe_dir: Path,
) -> None:
    """Evaluate EXP (exp/<run>) on a set: accuracy, PER, % zeros, ops."""
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
    )


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
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
@click.option("--hidden", type=int, default=550, show_default=True)
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--steps", type=int, default=200, show_default=True, help="Sequence length in frames.")
@click.option("--repeats", type=int, default=3, show_default=True)
def bench(device: str | None, hidden: int, batch: int, steps: int, repeats: int) -> None:
    """Training throughput of each architecture, side by side, as ratios to nn.LSTM."""
    from snnasr.bench import run_bench

    run_bench(device=device, hidden=hidden, batch=batch, steps=steps, repeats=repeats)


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


def _stage_name(argv: list[str]) -> str:
    """The (sub)command words of argv, e.g. 'prep timit', to prefix error lines."""
    words = [a for a in argv[:2] if not a.startswith("-")]
    if words[:1] not in (["prep"], ["export"]):
        words = words[:1]
    return " ".join(words) or "snnasr"


def main() -> None:
    try:
        cli.main(prog_name="snnasr")
    except SnnasrError as e:
        click.echo(f"snnasr {_stage_name(sys.argv[1:])}: {e}", err=True)
        sys.exit(1)
