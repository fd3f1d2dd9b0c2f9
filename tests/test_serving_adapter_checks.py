"""Serving refuses an adapter trained on another base model and warns when a RAFT adapter's index moved."""

import shutil
import warnings
from pathlib import Path

import pytest

from ragtune.core.adapters import read_card, write_card
from ragtune.core.errors import DataError


def _copy(pipeline, name: str, **card_update) -> Path:
    src = pipeline.config.adapters_dir / "tiny"
    dst = pipeline.config.adapters_dir / name
    shutil.copytree(src, dst)
    write_card(dst, read_card(src).model_copy(update={"name": name, **card_update}))
    return dst


def test_adapter_for_another_base_model_is_refused(serving_pipeline):
    pipeline = serving_pipeline(own_index=True)
    _copy(pipeline, "alien", base_model="bundled:some-other-model")
    with pytest.raises(DataError, match="trained on base model 'bundled:some-other-model'"):
        pipeline.load_adapter("alien")
    assert "alien" not in pipeline.generator.adapters


def test_raft_adapter_warns_when_its_snapshot_is_gone(serving_pipeline):
    pipeline = serving_pipeline(own_index=True)
    _copy(pipeline, "raft-old", snapshot="s00000-deadbeef")
    _copy(pipeline, "raft-now", snapshot=pipeline.index.snapshot)
    with pytest.warns(UserWarning, match="s00000-deadbeef"):
        pipeline.load_adapter("raft-old")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pipeline.load_adapter("raft-now")  # trained on the current snapshot: silent
    for name in ("raft-old", "raft-now"):
        pipeline.generator.unload_adapter(name)
