from pathlib import Path

import pytest

from ragtune.core.errors import ConfigError
from ragtune.core.models import load_embedder, resolve_embedder, resolve_generator


def test_bundled_generator_is_cached_as_plain_weights():
    path = Path(resolve_generator("bundled:smollm2-135m-instruct"))
    assert (path / "config.json").is_file()
    assert "quantization_config" not in (path / "config.json").read_text()


def test_bundled_embedder_encodes_384d():
    vec = load_embedder("bundled:all-minilm-l6-v2").encode(["hello world"])
    assert vec.shape == (1, 384)


def test_unknown_bundled_names_and_bad_folders(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown bundled generator"):
        resolve_generator("bundled:nope")
    with pytest.raises(ConfigError, match="unknown bundled embedder"):
        resolve_embedder("bundled:nope")
    with pytest.raises(ConfigError, match="config.json"):
        resolve_generator(str(tmp_path))


def test_local_folder_and_hub_id_pass_through(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_generator(str(tmp_path)) == str(tmp_path)
    assert resolve_generator("someorg/some-model") == "someorg/some-model"
