import pytest

from snnasr.config import load_config, parse_curriculum, save_config
from snnasr.io import ConfigError


def test_defaults_reproduce_seed_setting():
    cfg = load_config()
    assert (cfg.model.hidden, cfg.model.layers, cfg.model.n_bits, cfg.model.threshold) == (550, 2, 6, 3)
    assert cfg.train.epochs == 24 and cfg.train.lr == 1e-3
    assert sum(e for _, e in parse_curriculum(cfg.train.curriculum)) == 24


def test_overrides_are_typed(tmp_path):
    cfg = load_config(None, ["model.hidden=128", "train.lr=0.01", "model.recurrent=false"])
    assert cfg.model.hidden == 128 and cfg.train.lr == 0.01 and cfg.model.recurrent is False
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("bad", ["model.hiden=3", "model.hidden=abc", "model.arch=rnn", "nokey"])
def test_bad_overrides_are_errors(bad):
    with pytest.raises(ConfigError):
        load_config(None, [bad])


def test_unknown_yaml_key_names_the_file(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("model:\n  widht: 3\n")
    with pytest.raises(ConfigError, match="x.yaml"):
        load_config(p)
