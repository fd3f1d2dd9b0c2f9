"""Untrusted text made inert before it is templated: it can neither speak in the tokenizer's control
tokens nor leave the prompt's <documents>/<history> fence.

Two things are neutralised in documents, titles, questions and quoted turns (`PromptBuilder`):

- the tokenizer's markers, derived from the tokenizer itself (`markers_of`): every special token, every
  added token that looks like a control tag, and the bracketed tags its chat template writes (so a
  template whose `[INST]` is plain text is covered too). A marker is broken by a backslash after its
  first character (`<|im_end|>` -> `<\\|im_end|>`): visible, ASCII, and no tokenizer can match it;
- the fence tags `<documents>`, `</history>` and their look-alikes (any case or spacing, zero-width or
  combining characters inside, full-width, math or Cyrillic/Greek letters), rewritten to `(/documents)`.

Matching runs on a folded view of the text (NFKD, case-folded, confusables mapped, format and
combining characters dropped), so what a normalising tokenizer or a reader would take for a marker is
caught. Text without markers is returned unchanged: prompts built before stay byte-identical.
"""

from __future__ import annotations

import re
import unicodedata
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

ESCAPE = "\\"
FENCE_TAGS = ("documents", "history")
_FENCE = re.compile(r"<\s*(/?)\s*(" + "|".join(FENCE_TAGS) + r")\s*/?\s*>")
# look-alikes NFKD does not map: Cyrillic and Greek letters of the fence words, and bracket/slash shapes
_LOOKALIKES = (
    "аa еe оo сc рp хx уy іi ѕs һh ԁd јj мm тt пn гr ѵv ԝw АA ВB ЕE КK МM НH ОO РP СC ТT ХX УY ІI ЅS ЈJ "
    "ΑA ΒB ΕE ΗH ΙI ΚK ΜM ΝN ΟO ΡP ΤT ΧX ΥY ΖZ αa εe ιi κk νv οo ρp τt υu ηn "
    "‹< ›> 〈< 〉> 〈< 〉> ⟨< ⟩> ˂< ˃> ᐸ< ᐳ> ❮< ❯> ∕/ ⁄/ ╱/ ⧸/"
)
CONFUSABLES = {pair[0]: pair[1] for pair in _LOOKALIKES.split()}
_DROPPED = {"Cf", "Mn", "Me"}  # zero-width and bidi controls, combining marks: invisible inside a tag
_BRACKETS = re.compile(r"[<>\[\]{}|]")
_TEMPLATE_TAG = re.compile(r"[<\[][^\s<>\[\]]{1,64}[>\]]")
_PROBES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("system", "ragtuneprobe s"), ("user", "ragtuneprobe u"), ("assistant", "ragtuneprobe a"), ("user", "q")),
    (("user", "ragtuneprobe u"), ("assistant", "ragtuneprobe a"), ("user", "ragtuneprobe q")),
    (("user", "ragtuneprobe u"),),
)
MAX_ROUNDS = 4  # a rewrite cannot form a new marker; the bound only guards against a surprise


@lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    if unicodedata.category(ch) in _DROPPED:
        return ""
    out = []
    for part in unicodedata.normalize("NFKD", CONFUSABLES.get(ch, ch)):
        if unicodedata.category(part) not in _DROPPED:
            out.append(CONFUSABLES.get(part, part))
    return "".join(out).casefold()


@dataclass(frozen=True)
class Folded:
    """A folded view of `text` and, for each folded character, the index of the character it came from."""

    text: str
    origin: list[int] | None  # None: the view is `text.lower()` character for character (ASCII)

    @classmethod
    def of(cls, text: str) -> Folded:
        if text.isascii():
            return cls(text.lower(), None)
        chars: list[str] = []
        origin: list[int] = []
        for i, ch in enumerate(text):
            folded = _fold_char(ch)
            chars.append(folded)
            origin.extend([i] * len(folded))
        return cls("".join(chars), origin)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that folded[start:end] came from."""
        if self.origin is None:
            return start, end
        return self.origin[start], self.origin[end - 1] + 1


def _rewrite(text: str, pattern: re.Pattern[str], repl: Any) -> str:
    """`text` with each match of `pattern` in its folded view replaced by repl(original, match)."""
    view = Folded.of(text)
    pieces: list[str] = []
    last = 0
    for m in pattern.finditer(view.text):
        start, end = view.span(*m.span())
        if start < last:
            continue
        pieces += [text[last:start], repl(text[start:end], m)]
        last = end
    return text if not pieces else "".join(pieces) + text[last:]


def _break_marker(original: str, _: re.Match[str]) -> str:
    return original[0] + ESCAPE + original[1:]


def _quote_tag(original: str, _: re.Match[str]) -> str:
    # `</ Documents >` -> `(/Documents)`: the brackets (or their look-alikes) go, the name stays as written
    return "(" + "".join(original[1:-1].split()) + ")"


def _is_marker(token: str, special: bool) -> bool:
    """Whether an added token is a control tag (not a word or whitespace that normal text contains)."""
    token = token.strip()
    if len(token) < 2 or not any(ch.isalnum() for ch in token):
        return False
    if special:
        return not token.isalnum()
    return bool(_BRACKETS.search(token))


def _added_tokens(tokenizer: Any) -> Iterable[str]:
    for token in getattr(tokenizer, "all_special_tokens", []) or []:
        if _is_marker(str(token), True):
            yield str(token)
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    for added in decoder.values():
        content = str(getattr(added, "content", added))
        if _is_marker(content, bool(getattr(added, "special", True))):
            yield content


def _template_tags(tokenizer: Any) -> Iterable[str]:
    """The bracketed tags a chat template writes around turns, found by rendering probe conversations
    (templates that refuse a shape, e.g. a system turn, are simply tried with the next)."""
    if not getattr(tokenizer, "chat_template", None):
        return
    for probe in _PROBES:
        messages = [{"role": role, "content": content} for role, content in probe]
        try:
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # any template error only means this probe shape is not allowed
            continue
        yield from _TEMPLATE_TAG.findall(str(rendered))


def markers_of(tokenizer: Any) -> list[str]:
    """Every string in which this tokenizer (or its chat template) speaks, longest first."""
    found = {m for m in (*_added_tokens(tokenizer), *_template_tags(tokenizer)) if m.strip()}
    return sorted(found, key=lambda m: (-len(m), m))


class Neutraliser:
    """`inert(text)` for one tokenizer; build it with `neutraliser(tokenizer)` (cached per tokenizer)."""

    def __init__(self, markers: Iterable[str]) -> None:
        folded = sorted({Folded.of(m.strip()).text for m in markers} - {""}, key=lambda m: (-len(m), m))
        self.markers = folded
        self._pattern = re.compile("|".join(map(re.escape, folded))) if folded else None

    def specials(self, text: str) -> str:
        """`text` with every tokenizer marker broken; nothing else changes."""
        if self._pattern is None:
            return text
        for _ in range(MAX_ROUNDS):
            new = _rewrite(text, self._pattern, _break_marker)
            if new == text:
                break
            text = new
        return text

    def inert(self, text: str) -> str:
        """Untrusted text as it may enter a prompt: markers broken and fence tags quoted."""
        for _ in range(MAX_ROUNDS):
            new = _rewrite(self.specials(text), _FENCE, _quote_tag)
            if new == text:
                break
            text = new
        return text


_CACHE: weakref.WeakKeyDictionary[Any, Neutraliser] = weakref.WeakKeyDictionary()
_BY_ID: dict[int, tuple[Any, Neutraliser]] = {}  # tokenizers that refuse weak references


def neutraliser(tokenizer: Any) -> Neutraliser:
    """The tokenizer's `Neutraliser`, derived once per tokenizer object."""
    try:
        cached = _CACHE.get(tokenizer)
    except TypeError:
        held = _BY_ID.get(id(tokenizer))
        cached = held[1] if held and held[0] is tokenizer else None
    if cached is not None:
        return cached
    made = Neutraliser(markers_of(tokenizer))
    try:
        _CACHE[tokenizer] = made
    except TypeError:
        _BY_ID[id(tokenizer)] = (tokenizer, made)
    return made
