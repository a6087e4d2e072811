from __future__ import annotations

import pytest

from blendsync.shared.config import FeatureConfig
from blendsync.shared.provenance import cache_key, library_versions


def test_yaml_round_trip_keeps_the_hash(tmp_path):
    cfg = FeatureConfig()
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    back = FeatureConfig.load(p)
    assert back == cfg and back.hash == cfg.hash
    assert FeatureConfig.from_json(cfg.to_json()).hash == cfg.hash


def test_hash_covers_meaning_not_runtime_knobs():
    base = FeatureConfig()
    assert FeatureConfig.from_dict({"fps": 30}).hash == base.hash  # 30 == 30.0
    assert FeatureConfig(fps=30).hash == base.hash
    assert FeatureConfig.from_dict({"fps": 60}).hash != base.hash
    assert FeatureConfig.from_dict({"mel": {"n_mels": 64}}).hash != base.hash
    assert FeatureConfig.from_dict({"emotion": {"context_s": 2.0}}).hash != base.hash
    assert FeatureConfig.from_dict({"targets": {"channels": ["a", "b"]}}).hash != base.hash
    assert FeatureConfig.from_dict({"targets": {"max_mismatch_s": 0.5}}).hash == base.hash
    assert len(base.hash) == 16


def test_invalid_settings_name_value_and_expectation(tmp_path):
    with pytest.raises(ValueError, match=r"emotion.hop_s must be a multiple of .*10 ms.*0.0333"):
        FeatureConfig.from_dict({"emotion": {"hop_s": 0.0333}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) in mel: \['nmels'\]"):
        FeatureConfig.from_dict({"mel": {"nmels": 10}})
    p = tmp_path / "bad.yaml"
    p.write_text("fps: [")
    with pytest.raises(ValueError, match="bad.yaml"):
        FeatureConfig.load(p)


def test_channels_file_is_relative_to_the_config(tmp_path):
    (tmp_path / "rig.txt").write_text("3\nsmile\nblink\njaw\n")
    (tmp_path / "c.yaml").write_text("targets:\n  channels_file: rig.txt\n  mouth: [jaw]\n")
    cfg = FeatureConfig.load(tmp_path / "c.yaml")
    assert cfg.channels.channels == ("smile", "blink", "jaw") and cfg.channels.mouth == ("jaw",)
    assert cfg.channels.name == "rig"


def test_cache_key_changes_with_every_input():
    v = library_versions()
    base = dict(
        audio_sha256="a", targets_sha256="t", targets_key=None, targets_fps=None, feature_config_hash="f", versions=v
    )
    k = cache_key(**base)
    assert k == cache_key(**base)
    for field, other in [
        ("audio_sha256", "b"),
        ("targets_sha256", None),
        ("targets_key", "x"),
        ("targets_fps", 25.0),
        ("feature_config_hash", "g"),
        ("versions", {**v, "opensmile": "0"}),
    ]:
        assert cache_key(**{**base, field: other}) != k


@pytest.mark.parametrize(
    "doc, phrase",
    [
        ({"mel": {"n_mels": "eighty"}}, "mel.n_mels must be a whole number, got 'eighty'"),
        ({"mel": {"n_fft": 512.5}}, "mel.n_fft must be a whole number, got 512.5"),
        ({"emotion": {"context_s": [1.0]}}, "emotion.context_s must be a number, got [1.0]"),
        ({"sample_rate": True}, "sample_rate must be a whole number, got True"),
        ({"fps": "fast"}, "fps must be a number, got 'fast'"),
        ({"targets": {"jitter_tolerance": "x"}}, "targets.jitter_tolerance must be a number"),
    ],
)
def test_a_value_of_the_wrong_type_names_its_key(doc, phrase):
    with pytest.raises(ValueError) as e:
        FeatureConfig.from_dict(doc)
    assert phrase in str(e.value)


def test_a_config_file_nested_too_deeply_is_named(tmp_path):
    from blendsync.shared.config import FeatureConfig
    from blendsync.train.core.config import TrainConfig

    deep = tmp_path / "deep.yaml"
    deep.write_text("x: " + "[" * 5000 + "]" * 5000)
    for cls in (TrainConfig, FeatureConfig):
        with pytest.raises(ValueError, match=r"deep\.yaml: nested too deeply to be a config"):
            cls.load(deep)
