"""snnasr prep librispeech on a generated LibriSpeech layout, with MFA-style TextGrids."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from snnasr import cli as cli_module
from snnasr.data.datadir import read_segments, read_table, validate_data_dir
from snnasr.data.librispeech import prepare_librispeech
from snnasr.data.textgrid import read_textgrid
from snnasr.io import DataError
from snnasr.lang import load_lang

RATE = 16000
# (xmin, xmax, label) of the phones tier, as MFA (english_us_arpa) writes it; durations in seconds.
PHONES = [
    (0.0, 0.05, ""),
    (0.05, 0.12, "DH"),
    (0.12, 0.2, "AH0"),
    (0.2, 0.23, "sp"),
    (0.23, 0.3, "K"),
    (0.3, 0.41, "AE1"),
    (0.41, 0.47, "T"),
    (0.47, 0.5, "spn"),
]
WORDS = [(0.0, 0.05, ""), (0.05, 0.2, "the"), (0.2, 0.23, ""), (0.23, 0.47, "cat"), (0.47, 0.5, "<unk>")]
EXPECTED = [
    (0, 800, "sil"),
    (800, 1920, "dh"),
    (1920, 3200, "ah"),
    (3200, 3680, "sil"),
    (3680, 4800, "k"),
    (4800, 6560, "ae"),
    (6560, 7520, "t"),
    (7520, 8000, "sil"),
]


def long_textgrid(tiers: dict[str, list], xmax: float) -> str:
    """Praat's long text format, as MFA writes it."""
    out = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0 ",
        f"xmax = {xmax} ",
        "tiers? <exists> ",
        f"size = {len(tiers)} ",
        "item []: ",
    ]
    for i, (name, ivs) in enumerate(tiers.items(), 1):
        out += [
            f"    item [{i}]:",
            '        class = "IntervalTier" ',
            f'        name = "{name}" ',
            "        xmin = 0 ",
            f"        xmax = {xmax} ",
            f"        intervals: size = {len(ivs)} ",
        ]
        for j, (a, b, t) in enumerate(ivs, 1):
            out += [
                f"        intervals [{j}]:",
                f"            xmin = {a} ",
                f"            xmax = {b} ",
                '            text = "{}" '.format(t.replace('"', '""')),
            ]
    return "\n".join(out) + "\n"


def short_textgrid(tiers: dict[str, list], xmax: float) -> str:
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "0", str(xmax), "<exists>", str(len(tiers))]
    for name, ivs in tiers.items():
        out += ['"IntervalTier"', f'"{name}"', "0", str(xmax), str(len(ivs))]
        for a, b, t in ivs:
            out += [str(a), str(b), '"{}"'.format(t.replace('"', '""'))]
    return "\n".join(out) + "\n"


def make_librispeech(
    root: Path, sets=("dev-clean", "test-clean"), textgrids: Path | None = None, seconds: float = 0.5
) -> dict[str, list[str]]:
    """``root/LibriSpeech/<set>/<spk>/<chapter>/`` with FLAC + trans.txt; TextGrids (long and short) if asked."""
    rng = np.random.default_rng(0)
    utts: dict[str, list[str]] = {}
    for k, name in enumerate(sets):
        utts[name] = []
        for spk, chapter in ((84 + k, 121123), (174 + k, 168635)):
            d = root / "LibriSpeech" / name / str(spk) / str(chapter)
            d.mkdir(parents=True)
            lines = []
            for i in range(2):
                utt = f"{spk}-{chapter}-{i:04d}"
                sf.write(
                    d / f"{utt}.flac",
                    (rng.normal(0, 1000, int(seconds * RATE))).astype(np.int16),
                    RATE,
                    format="FLAC",
                    subtype="PCM_16",
                )
                lines.append(f"{utt} THE CAT\n")
                utts[name].append(utt)
                if textgrids is not None:
                    writer = long_textgrid if i == 0 else short_textgrid
                    tg_dir = textgrids / str(spk) if i == 0 else textgrids  # MFA layout and a flat one
                    tg_dir.mkdir(parents=True, exist_ok=True)
                    (tg_dir / f"{utt}.TextGrid").write_text(writer({"words": WORDS, "phones": PHONES}, seconds))
            (d / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))
    return utts


def test_data_dirs_and_phone_segments_from_textgrids(tmp_path):
    utts = make_librispeech(tmp_path / "corpus", textgrids=tmp_path / "mfa")
    recipe = tmp_path / "recipe"
    counts = prepare_librispeech(tmp_path / "corpus", recipe, ["dev-clean", "test-clean"], textgrids=tmp_path / "mfa")
    assert counts == {"dev_clean": 4, "test_clean": 4}
    data = recipe / "data" / "dev_clean"
    assert validate_data_dir(data) == {"utterances": 4, "speakers": 2}
    assert read_table(data / "utt2spk")["84-121123-0001"] == "84"
    assert read_table(data / "text")["84-121123-0001"] == "THE CAT"
    wav = read_table(data / "wav.scp")
    assert sorted(wav) == sorted(utts["dev-clean"])
    assert wav["84-121123-0000"] == str(
        (tmp_path / "corpus/LibriSpeech/dev-clean/84/121123/84-121123-0000.flac").resolve()
    )
    segs = read_segments(data / "phone_segments")
    assert segs["84-121123-0000"] == EXPECTED  # long format, <DIR>/<spk>/<utt>.TextGrid
    assert segs["84-121123-0001"] == EXPECTED  # short format, flat
    lang = load_lang(recipe / "data" / "lang")
    assert list(lang.levels) == ["phone"] and lang.num_classes("phone") == 40
    assert "sil" in lang.symbols("phone") and "ah" in lang.symbols("phone") and "ah0" not in lang.symbols("phone")
    assert (lang.default, lang.score, lang.silence, lang.segment_level) == ("phone", "phone", ["sil"], "phone")


def test_without_textgrids_only_data_dirs(tmp_path):
    make_librispeech(tmp_path / "corpus", sets=("train-clean-100",))
    recipe = tmp_path / "recipe"
    # CORPUS may be the LibriSpeech/ dir itself; set names may carry spaces after commas
    counts = prepare_librispeech(tmp_path / "corpus" / "LibriSpeech", recipe, [" train-clean-100"])
    assert counts == {"train_clean_100": 4}
    assert (recipe / "data" / "train_clean_100" / "wav.scp").is_file()
    assert not (recipe / "data" / "train_clean_100" / "phone_segments").exists()
    assert not (recipe / "data" / "lang").exists()


def test_textgrid_long_and_short_formats_agree(tmp_path):
    tiers = {"words": WORDS, "phones": PHONES + [(0.5, 0.6, 'say "hi"')]}
    (tmp_path / "l.TextGrid").write_text(long_textgrid(tiers, 0.6))
    (tmp_path / "s.TextGrid").write_text(short_textgrid(tiers, 0.6), encoding="utf-16")
    long_tg, short_tg = read_textgrid(tmp_path / "l.TextGrid"), read_textgrid(tmp_path / "s.TextGrid")
    assert long_tg == short_tg
    assert [t.name for t in long_tg.tiers] == ["words", "phones"] and long_tg.xmax == 0.6
    assert long_tg.tier("PHONES").intervals[-1].text == 'say "hi"'
    assert long_tg.tier("phones").intervals[2].xmin == 0.12


def test_mfa2_speaker_tier_names(tmp_path):
    (tmp_path / "a.TextGrid").write_text(long_textgrid({"84 - words": WORDS, "84 - phones": PHONES}, 0.5))
    assert read_textgrid(tmp_path / "a.TextGrid").tier("phones").name == "84 - phones"


def _edit_textgrid(tg_dir: Path, utt: str, phones: list) -> None:
    path = next(tg_dir.rglob(f"{utt}.TextGrid"))
    path.write_text(long_textgrid({"words": WORDS, "phones": phones}, 0.5), encoding="utf-8")


BAD = {
    "missing set": (lambda c, g: None, ["dev-clean", "train-other-500"], r"train-other-500: set not found"),
    "flac without transcript": (
        lambda c, g: (c / "LibriSpeech/dev-clean/84/121123/84-121123.trans.txt").write_text("84-121123-0000 THE CAT\n"),
        ["dev-clean"],
        r"84-121123-0001.flac: no transcript line \(1 such",
    ),
    "transcript without flac": (
        lambda c, g: (c / "LibriSpeech/dev-clean/84/121123/84-121123-0001.flac").unlink(),
        ["dev-clean"],
        r"1 transcript lines without a .flac \(e.g. 84-121123-0001\)",
    ),
    "missing textgrids": (
        lambda c, g: [p.unlink() for p in g.rglob("84-*.TextGrid")],
        ["dev-clean"],
        r"data/dev_clean: 2 of 4 utterances are bad, more than 5% \(first: 84-121123-0000: no TextGrid in .*mfa \(MFA did not align it\)",
    ),
    "ipa phones": (
        lambda c, g: _edit_textgrid(g, "84-121123-0000", [(0, 0.5, "ʃ")]),
        ["dev-clean"],
        r"phone 'ʃ' is not ARPAbet",
    ),
    "textgrid of longer audio": (
        lambda c, g: _edit_textgrid(g, "84-121123-0000", [(0, 0.9, "AH0")]),
        ["dev-clean"],
        r"beyond the audio \(0.500 s\)",
    ),
    "no phones tier": (
        lambda c, g: next(g.rglob("84-121123-0000.TextGrid")).write_text(long_textgrid({"words": WORDS}, 0.5)),
        ["dev-clean"],
        r"no 'phones' interval tier",
    ),
    "garbage textgrid": (
        lambda c, g: next(g.rglob("84-121123-0000.TextGrid")).write_text("hello"),
        ["dev-clean"],
        r"not a valid TextGrid",
    ),
    "8 kHz audio": (
        lambda c, g: sf.write(
            c / "LibriSpeech/dev-clean/84/121123/84-121123-0000.flac", np.zeros(4000, np.int16), 8000, format="FLAC"
        ),
        ["dev-clean"],
        r"sample rate 8000 Hz",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_data_error_and_writes_nothing(tmp_path, case):
    mutate, sets, message = BAD[case]
    make_librispeech(tmp_path / "corpus", textgrids=tmp_path / "mfa")
    mutate(tmp_path / "corpus", tmp_path / "mfa")
    with pytest.raises(DataError, match=message) as err:
        prepare_librispeech(tmp_path / "corpus", tmp_path / "recipe", sets, textgrids=tmp_path / "mfa")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "recipe").exists()


def test_cli_one_line_error(tmp_path, monkeypatch, capsys):
    make_librispeech(tmp_path / "corpus", sets=("dev-clean",))
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "snnasr",
            "prep",
            "librispeech",
            str(tmp_path / "corpus"),
            "--sets",
            "dev-clean,test-clean",
            "-d",
            str(tmp_path / "recipe"),
        ],
    )
    with pytest.raises(SystemExit) as ex:
        cli_module.main()
    err = capsys.readouterr().err
    assert ex.value.code == 1 and err.startswith("snnasr prep librispeech: ") and "test-clean: set not found" in err
    assert err.count("\n") == 1 and not (tmp_path / "recipe").exists()
