"""The docs name only what exists: every function, class, config key, file and CLI flag in `docs/*.md`
and README.md is checked against the code, so a rename that forgets the docs fails here."""

from __future__ import annotations

import ast
import builtins
import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer

from ragtune.core.config import Config

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
PACKAGES = ("core", "retrieval", "tuning", "serving", "eval", "cli")
# Names the docs cite from libraries and other tools, not from ragtune.
FOREIGN = {
    "Trainer", "TrainingArguments", "SentenceTransformer", "IndexIDMap2", "IndexFlatIP", "IndexHNSWFlat",
    "IndexIVFFlat", "AutoModelForCausalLM", "AutoTokenizer", "BaseRetriever", "FastAPI", "StreamingResponse",
    "EventSourceResponse", "LoraConfig", "PeftModel", "RecursiveCharacterTextSplitter",
    "MarkdownHeaderTextSplitter", "TokenTextSplitter", "DataCollatorForSeq2Seq", "ThreadPoolExecutor",
    "FileLock", "BaseModel", "SecretStr", "TrainerCallback", "TextIteratorStreamer", "DynamicCache",
    "LogitsProcessor", "StoppingCriteria", "BaseStreamer", "GenerationConfig", "JSONResponse", "OpenAI",
    "DistributedDataParallel", "HTTPException", "APIRouter", "BackgroundTasks", "PdfReader", "BeautifulSoup",
    "DeepSpeed", "PostgreSQL", "LangChain", "LlamaIndex", "SmolLM2", "MiniLM", "SciFact", "HotpotQA",
    "PyPI", "FlashRAG", "JSONL", "OpenAPI", "TurboRAG", "McNemar", "WWW-Authenticate", "DatasetDict", "save_local",
}  # fmt: skip
FOREIGN_FLAGS = {"--no-deps", "--lora-modules", "--nproc_per_node", "--num_processes", "--config_file"}
FOREIGN_MODULES = ("faiss.", "torch.", "np.", "os.", "model.", "sqlite3.", "json.")
BUILTINS = set(dir(builtins))
SECTIONS = tuple(Config.model_fields)


def spans(path: Path) -> Iterator[str]:
    """Inline code spans, and every line of fenced blocks (commands live there)."""
    text = path.read_text(encoding="utf-8")
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
        yield from (line.strip() for line in block.splitlines() if line.strip())
    yield from re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))


def _code_files() -> list[Path]:
    files = [f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*") if f.is_file()]
    return files + sorted(ROOT.glob("*.py"))


@cache
def bench_flags() -> set[str]:
    return {f for b in (ROOT / "bench").glob("*.py") for f in re.findall(r"[\"'](--[a-z][\w-]*)[\"']", b.read_text())}


@cache
def defined() -> dict[str, set[str]]:
    """name -> the names defined inside it (classes: their methods and fields); '' holds the top level."""
    out: dict[str, set[str]] = {"": set()}
    for file in _code_files():
        if file.suffix == ".py":
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                _collect(node, out)
    return out


def _collect(node: ast.AST, out: dict[str, set[str]]) -> None:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        out[""].add(node.name)
    if isinstance(node, ast.ClassDef):
        members = out.setdefault(node.name, set())
        for item in node.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                members.add(item.name)
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                members.add(item.target.id)
    if isinstance(node, ast.Assign):
        out[""].update(t.id for t in node.targets if isinstance(t, ast.Name))


SKIP_DIRS = {".venv", ".git", ".ragtune", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


@cache
def repo_files() -> dict[str, list[Path]]:
    """file name -> the repository's files of that name (one walk, without the venv and caches)."""
    out: dict[str, list[Path]] = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for f in files:
            out.setdefault(f, []).append(Path(folder) / f)
    return out


@cache
def source_words() -> set[str]:
    words: set[str] = set()
    for file in _code_files() + sorted((ROOT / "bench").glob("*.py")):  # bench figures are named in docs too
        if file.suffix in (".py", ".html", ".json", ".jsonl", ".yaml"):
            words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", file.read_text(encoding="utf-8")))
    return words


@cache
def cli_tree() -> tuple[set[str], set[str]]:
    """Every command path ('eval compare') and every option flag of the `ragtune` CLI."""
    from ragtune.cli import app

    commands: set[str] = set()
    flags: set[str] = {"--help"}

    def walk(cmd: Any, path: str) -> None:  # typer vendors its own click
        commands.add(path.strip())
        for p in cmd.params:
            flags.update(o.split("/")[0] for o in [*p.opts, *p.secondary_opts] if o.startswith("--"))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "")
    return commands, flags


def problems(span: str) -> list[str]:
    out: list[str] = []
    for check in (_file, _config_key, _call, _member, _name, _cli):
        out += check(span)
    return out


def _file(span: str) -> list[str]:
    m = re.fullmatch(r"([\w./*-]+\.py)(?::(\w+))?", span)
    if not m or "*" in span:
        return []
    rel = m.group(1)
    hits = [h for h in repo_files().get(Path(rel).name, []) if h.as_posix().endswith("/" + rel)]
    if not hits:
        return [f"file {rel} does not exist"]
    if m.group(2) and not any(re.search(rf"\b(def|class) {m.group(2)}\b", h.read_text()) for h in hits):
        return [f"{m.group(2)} is not defined in {rel}"]
    return []


def _config_key(span: str) -> list[str]:
    m = re.match(rf"({'|'.join(SECTIONS)})\.([a-z_]+)(?![.\w/])", span)
    if not m or m.group(2) in ("md", "json", "jsonl", "html", "py", "yaml"):
        return _module_path(span)
    section = Config.model_fields[m.group(1)].annotation
    fields = getattr(section, "model_fields", {})
    return [] if m.group(2) in fields else [f"config key {m.group(1)}.{m.group(2)} does not exist"]


def _module_path(span: str) -> list[str]:
    """`tuning.data.load_examples`: a module of ours and a name defined in it."""
    m = re.fullmatch(rf"((?:{'|'.join(PACKAGES)})(?:\.\w+)+)\.(\w+)", span)
    if not m:
        return []
    base = ROOT / m.group(1).replace(".", "/")
    file = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    if not file.is_file():
        return [f"module {m.group(1)} does not exist"]
    return [] if re.search(rf"\b(def|class) {m.group(2)}\b", file.read_text()) else [f"{span} is not defined"]


def _call(span: str) -> list[str]:
    m = re.fullmatch(r"([A-Za-z_][\w.]*)\(.*\)", span)
    if not m or m.group(1) in BUILTINS or span.startswith(FOREIGN_MODULES):
        return []
    name = m.group(1).split(".")[-1]
    return [] if name in defined()[""] else [f"function {m.group(1)}() is not defined"]


def _member(span: str) -> list[str]:
    m = re.fullmatch(r"([A-Z]\w+)\.([a-z_]\w*)(?:\(.*\))?", span)
    if not m or m.group(1) in FOREIGN:
        return []
    cls, attr = m.groups()
    if cls not in defined():
        return [f"class {cls} is not defined"]
    return [] if attr in defined()[cls] else [f"{cls}.{attr} is not defined"]


def _name(span: str) -> list[str]:
    """A bare identifier: CamelCase must be one of our classes, snake_case/CAPS must occur in the code."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", span) or span in FOREIGN or span in BUILTINS:
        return []
    if span.startswith("RAGTUNE_"):  # an environment override: RAGTUNE_<SECTION>__<KEY>
        keys = span[len("RAGTUNE_") :].lower().split("__")
        ok = keys[0] in SECTIONS or span in source_words()
        return [] if ok else [f"environment variable {span} sets nothing"]
    if re.fullmatch(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+", span):
        return [] if span in defined() or span in defined()[""] else [f"class {span} is not defined"]
    if "_" in span.strip("_") or span.isupper() and len(span) > 2:
        known = span in source_words() or span.removesuffix("_total") in source_words()  # prometheus adds _total
        return [] if known else [f"name {span} occurs nowhere in the code"]
    return []


def _cli(span: str) -> list[str]:
    commands, flags = cli_tree()
    if not span.startswith("ragtune ") and not re.fullmatch(r"--[a-z][\w-]*(?:[ =].*)?", span):
        return []
    out = [
        f"flag {f} is no option of the ragtune CLI"
        for f in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", span)
        if f not in flags and f not in FOREIGN_FLAGS and (span.startswith("ragtune ") or f not in bench_flags())
    ]
    words = re.findall(r"^ragtune((?: [a-z][a-z-]*)+)", span)
    if words:
        path = words[0].split()
        if path[0] not in commands:
            out.append(f"command 'ragtune {path[0]}' does not exist")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_what_exists(doc: Path) -> None:
    found = sorted({f"`{s}`: {p}" for s in spans(doc) for p in problems(s)})
    assert not found, f"{doc.name} names what the code does not have:\n" + "\n".join(found)


def test_the_checker_catches_stale_names() -> None:
    """The checks fail on names that do not exist (so a green docs test means something)."""
    assert problems("eval/harness/nonexistent.py")
    assert problems("retrieval.no_such_key")
    assert problems("run_arms_that_vanished()")
    assert problems("Pipeline.no_such_method")
    assert problems("ragtune tune --no-such-flag")
    assert problems("ragtune frobnicate")
    assert not problems("retrieval.top_k") and not problems("Pipeline.answer") and not problems("ragtune tune --data")


def test_the_architecture_lists_every_module() -> None:
    """docs/architecture.md's rooms table names every module, so a new file cannot go undocumented."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = [
        str(f.relative_to(ROOT))
        for package in PACKAGES
        for f in sorted((ROOT / package).rglob("*.py"))
        if f.name != "__init__.py"
        and "routers" not in f.parts  # the table names them as `routers/*.py`
        and f"`{f.name}`" not in text
        and str(f.relative_to(ROOT)) not in text
    ]
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"
