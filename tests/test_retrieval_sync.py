"""Loaders (each with a bad file), `ragtune sync` over a changing folder, and the retrieval CLI."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragtune.cli import app
from ragtune.core.errors import DataError
from ragtune.retrieval.loaders import load_documents, load_paths
from ragtune.retrieval.sync import sync_folder

runner = CliRunner()


def tiny_pdf(text: str, title: str) -> bytes:
    """A one-page PDF with one line of Helvetica text, built by hand (no writer library needed)."""
    stream = f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 144] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>".encode(),
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_each_loader_and_its_bad_file(tmp_path: Path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "page.html").write_text(
        "<html><head><title>Lamp Page</title><style>p{}</style></head>"
        "<body><h1>Lamp</h1><script>var x=1;</script><p>The lamp glows <b>amber</b>.</p></body></html>"
    )
    (d / "manual.pdf").write_bytes(tiny_pdf("The lamp battery lasts 31 hours.", "Lamp Manual"))
    (d / "faq.csv").write_text(
        'id,title,text,tags\nq1,Charging,"Charging takes 90 minutes.",power\nq2,,Mauve is the default.,\n'
    )
    (d / "table.csv").write_text("model,watts\nA1,5\nB2,7\n")
    (d / "notes.md").write_text("# Notes\n\nShort note.")
    (d / "rows.jsonl").write_text(json.dumps({"id": "j1", "text": "From JSONL.", "metadata": {"k": 1}}) + "\n")
    # one bad file of each kind
    (d / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (d / "empty.md").write_text("   \n")
    (d / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (d / "blank.html").write_text("<html><body><script>only()</script></body></html>")
    (d / "bad.csv").write_text("id,text\nz1,\n")
    (d / "bad.jsonl").write_text("{nope\n")

    result = load_paths([d])
    docs = {x.id: x for x in result.documents}
    assert set(docs) == {"page", "manual", "q1", "q2", "table", "notes", "j1"}
    assert docs["page"].title == "Lamp Page" and "amber" in docs["page"].text and "var x" not in docs["page"].text
    assert docs["manual"].title == "Lamp Manual" and "31 hours" in docs["manual"].text
    assert docs["q1"].title == "Charging" and docs["q1"].metadata["tags"] == "power"
    assert "model: A1; watts: 5" in docs["table"].text
    reasons = sorted(result.errors)
    assert len(reasons) == 6
    for name, why in [
        ("bad.csv", ":2: empty text"),
        ("bad.jsonl", ":1: malformed JSON"),
        ("blank.html", "no visible text"),
        ("broken.pdf", "not a readable PDF"),
        ("empty.md", "file is empty"),
        ("latin1.txt", "not UTF-8"),
    ]:
        assert any(name in r and why in r for r in reasons), (name, reasons)
    with pytest.raises(DataError, match="not UTF-8"):
        load_documents([d / "latin1.txt"])
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(DataError, match="unsupported file type '.bin'"):
        load_paths([tmp_path / "x.bin"])


def test_sync_mirrors_a_folder(tmp_path: Path, open_index):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "a.md").write_text("# Alpha\n\nThe alpha lamp is red.")
    (d / "b.md").write_text("# Beta\n\nThe beta lamp is blue.")
    (d / "sub" / "c.txt").write_text("The gamma lamp is green.")
    ix = open_index(tmp_path / "ix")
    first = sync_folder(ix, d, progress=False)
    assert sorted(first.added) == ["a", "b", "sub/c"] and not first.errors
    again = sync_folder(ix, d, progress=False)
    assert not again.changed and again.snapshot == first.snapshot and len(again.unchanged) == 3

    (d / "a.md").write_text("# Alpha\n\nThe alpha lamp is now purple.")  # edit
    (d / "b.md").rename(d / "sub" / "b2.md")  # rename
    (d / "sub" / "c.txt").unlink()  # delete
    (d / "new.html").write_text("<title>Delta</title><p>The delta lamp is gold.</p>")  # add
    (d / "bad.txt").write_bytes(b"\xff\xfe\x00bad")  # a bad file does not stop the rest
    rep = sync_folder(ix, d, progress=False)
    assert rep.updated == ["a"] and sorted(rep.added) == ["new", "sub/b2"]
    assert sorted(rep.deleted) == ["b", "sub/c"] and rep.renamed == [("b.md", "sub/b2.md")]
    assert rep.vectors_reused >= 1  # the renamed file's text was not embedded again
    assert len(rep.errors) == 1 and "bad.txt" in rep.errors[0]
    assert ix.document_ids() == ["a", "new", "sub/b2"]
    assert "purple" in ix.search("alpha lamp colour", k=1)[0].chunk.text
    (d / "bad.txt").unlink()
    assert not sync_folder(ix, d, progress=False).changed
    with pytest.raises(DataError, match="not a folder"):
        sync_folder(ix, d / "a.md")


def test_cli_sync_search_modes_filters_and_snapshots(tmp_path: Path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "lamp.md").write_text("# Lamp Facts\n\nThe lamp battery lasts 31 hours.")
    (d / "desk.md").write_text("# Desk Facts\n\nThe desk is made of oak.")
    (d / "bad.txt").write_bytes(b"\xff\xfe")
    ws = ["--workspace", str(tmp_path / "ws")]
    r = runner.invoke(app, ["sync", str(d), *ws])
    assert r.exit_code == 0 and "2 added" in r.output and "skipped" in r.output and "bad.txt" in r.output
    first = json.loads(runner.invoke(app, ["index", "snapshots", "--json", *ws]).output)[0]["id"]
    r = runner.invoke(app, ["sync", str(d), *ws])
    assert r.exit_code == 0 and "nothing changed" in r.output
    (d / "desk.md").unlink()
    assert "1 deleted" in runner.invoke(app, ["sync", str(d), *ws]).output
    for mode in ("dense", "lexical", "hybrid"):
        r = runner.invoke(app, ["search", "battery hours", "--mode", mode, "--json", *ws])
        assert r.exit_code == 0 and json.loads(r.output)[0]["chunk"]["doc_id"] == "lamp", mode
    r = runner.invoke(app, ["search", "oak desk", "--snapshot", first, "--filter", "doc_id=desk", "--json", *ws])
    assert [h["chunk"]["doc_id"] for h in json.loads(r.output)] == ["desk"]
    r = runner.invoke(app, ["index", "snapshots", *ws])
    assert first in r.output and "(current)" in r.output
    r = runner.invoke(app, ["ingest", str(d), *ws])
    assert r.exit_code == 0 and "skipped" in r.output and "nothing changed" in r.output
