"""Settings declared once: every config field carries its rule and its description, the
checks and the commented default files read them from there, and both load back."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from blendsync.shared import settings
from blendsync.shared.config import FeatureConfig
from blendsync.train.core.config import TrainConfig


@pytest.mark.parametrize("cls", [TrainConfig, FeatureConfig])
def test_every_setting_has_a_description_and_a_rule(cls):
    keys = settings.keys(cls)
    leaves = sum(len(dataclasses.fields(sub)) for sub in settings.sections(cls).values())
    leaves += len(dataclasses.fields(cls)) - len(settings.sections(cls))
    assert len(keys) == leaves  # no field is left undeclared
    undocumented = [k for k, f in keys.items() if not settings.doc_text(f) or not settings.rule_text(f)]
    assert undocumented == []


@pytest.mark.parametrize("cls", [TrainConfig, FeatureConfig])
def test_the_commented_default_file_loads_back_to_the_defaults(cls, tmp_path):
    cfg = cls()
    text = cfg.to_commented_yaml("header") if cls is FeatureConfig else settings.commented_yaml(cfg, cfg.to_dict())
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= len(settings.keys(cls))  # every key described above itself
    p = tmp_path / "c.yaml"
    p.write_text(text)
    back = cls.load(p)
    assert back == cfg and back.hash == cfg.hash


def test_the_feature_default_file_names_the_arkit_set_and_how_to_give_a_rig():
    text = FeatureConfig().to_commented_yaml()
    assert "channels: arkit52" in text and "channels_file" in text
    assert yaml.safe_load(text)["targets"]["channels"] == "arkit52"


@pytest.mark.parametrize(
    "field,good,bad,message",
    [
        (settings.integer(3, minimum=1, doc="x"), 1, 0, "k must be >= 1, got 0"),
        (settings.integer(3, minimum=1, doc="x"), 1, 2.5, "k must be an integer, got 2.5"),
        (settings.positive(1.0, doc="x"), 0.1, 0, "k must be > 0, got 0"),
        (settings.positive(1.0, doc="x"), 0.1, float("inf"), "k must be a finite number, got inf"),
        (settings.fraction(0.5, doc="x"), 0, 1, "k must be in [0, 1), got 1"),
        (settings.unit(0.5, doc="x"), 1, 1.5, "k must be in [0, 1], got 1.5"),
        (settings.one_of("a", lambda: ("a", "b"), doc="x"), "b", "c", "k must be one of ['a', 'b'], got 'c'"),
        (settings.flag(True, doc="x"), False, 0, "k must be true or false, got 0"),
        (settings.unit_pair((0.5, 0.5), doc="x"), [0, 0.9], [0.9], "k must be two numbers in [0, 1), got [0.9]"),
    ],
)
def test_a_rule_names_the_key_the_value_and_what_it_must_be(field, good, bad, message):
    check = field.metadata[settings.CHECK]
    assert check("k", good) is None
    assert check("k", bad) == message


def test_feature_config_values_are_checked_by_their_own_fields():
    with pytest.raises(ValueError, match=r"mel.n_mels must be >= 1, got 0"):
        FeatureConfig.from_dict({"mel": {"n_mels": 0}})
    with pytest.raises(ValueError, match=r"emotion.feature_set must be one of \['eGeMAPSv02'\]"):
        FeatureConfig.from_dict({"emotion": {"feature_set": "ComParE"}})
    with pytest.raises(ValueError, match=r"targets.jitter_tolerance must be >= 0"):
        FeatureConfig.from_dict({"targets": {"jitter_tolerance": -1}})
