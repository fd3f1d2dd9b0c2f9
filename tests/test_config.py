from pathlib import Path

import pytest

from ragtune.core.config import load_config
from ragtune.core.errors import ConfigError


def test_defaults_point_at_bundled_models():
    cfg = load_config(environ={})
    assert cfg.models.generator == "bundled:smollm2-135m-instruct"
    assert cfg.models.embedder == "bundled:all-minilm-l6-v2"


def test_yaml_then_env_then_overrides(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("retrieval:\n  top_k: 7\ngeneration:\n  max_new_tokens: 20\n")
    cfg = load_config(f, environ={"RAGTUNE_GENERATION__MAX_NEW_TOKENS": "33"})
    assert cfg.retrieval.top_k == 7
    assert cfg.generation.max_new_tokens == 33
    cfg = load_config(f, environ={}, overrides={"retrieval": {"top_k": 2}})
    assert cfg.retrieval.top_k == 2


def test_invalid_value_names_the_key(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"retrieval\.top_k"):
        load_config(environ={"RAGTUNE_RETRIEVAL__TOP_K": "many"})
    f = tmp_path / "c.yaml"
    f.write_text("tuning:\n  lora_r: 0\n")
    with pytest.raises(ConfigError, match=r"tuning\.lora_r"):
        load_config(f, environ={})


def test_unknown_key_and_bad_yaml_are_clear(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("retrieval:\n  topk: 3\n")
    with pytest.raises(ConfigError, match=r"retrieval\.topk"):
        load_config(f, environ={})
    f.write_text("retrieval: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml", environ={})


def test_digest_changes_with_config():
    a = load_config(environ={})
    b = load_config(environ={}, overrides={"retrieval": {"top_k": 9}})
    assert a.digest() != b.digest()
    assert a.digest() == load_config(environ={}).digest()
