"""`Index` and `PgIndex` implement `IndexProtocol`: statically (the typed assignment below, checked by
mypy) and at runtime, member by member with the same parameter names, kinds and defaults, so callers
typed against the protocol can use it with keywords."""

import inspect
from pathlib import Path

from ragtune.retrieval.index import Index
from ragtune.retrieval.protocol import IndexProtocol

MEMBERS = sorted(name for name in dir(IndexProtocol) if not name.startswith("_") or name in ("__enter__", "__exit__"))


def _params(fn: object) -> list[tuple[str, object, object]]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_index_satisfies_the_protocol(tmp_path: Path, open_index):
    typed: IndexProtocol = Index(tmp_path / "typed")  # mypy: Index must be structurally an IndexProtocol
    typed.close()
    ix = open_index(tmp_path / "ix")  # and at runtime, both backends
    assert isinstance(ix, IndexProtocol)
    for name in ("upsert", "delete", "apply", "search", "search_many", "snapshot", "snapshots", "stats", "close"):
        assert name in MEMBERS
    for name in MEMBERS:
        wanted = inspect.getattr_static(IndexProtocol, name)
        have = inspect.getattr_static(type(ix), name, None)
        assert have is not None, f"{type(ix).__name__} lacks {name}"
        if isinstance(wanted, property):
            assert isinstance(have, property), name
        else:
            assert _params(have) == _params(wanted), name
    ix.close()


def test_an_object_missing_a_member_does_not_pass():
    class Partial:
        def search(self, query: str) -> list[object]:
            return []

    assert not isinstance(Partial(), IndexProtocol)
