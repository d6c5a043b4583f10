from click.testing import CliRunner

from snnasr.cli import cli


def test_help_lists_stages_in_pipeline_order():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    out = result.output
    names = [
        n for n in ("synth", "prep", "validate", "features", "train", "eval", "report", "bench") if f"  {n}" in out
    ]
    positions = [out.index(f"  {n}") for n in names]
    assert positions == sorted(positions)
