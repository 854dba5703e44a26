"""Secret references (`env:NAME`, `file:PATH`): resolution at the edge, redaction everywhere.

Secrets live outside the repository and outside settings values; only references
travel. `resolve` is called by the edge that needs the value (a Git transport, a
provider, a task), and every resolved value is registered with the process-wide
`REDACTOR`, which log processors, plans, status writers and error messages use
to replace it with `***`.

What is scrubbed: each secret in every form it takes on the way out — as is,
JSON-string escaped (a secret holding ``"`` or ``\\``), Python-repr escaped,
URL-encoded (``quote``, ``quote_plus``, the WHATWG sets httpx and browsers use,
lower-case hex), one of these inside another, base64 — and the values derived
from it (`basic_auth`: the base64 of ``user:password``). Text is
redacted *before* it is cut (`Redactor.truncate`): a cut through a secret would
leave its first characters, which no matcher recognises any more.

How: Aho-Corasick automata (pyahocorasick) over every form, so the cost per
string grows with the string, not with the number of secrets. Spans that
overlap are merged and replaced whole, so a secret that contains or overlaps
another leaves no fragment. An automaton cannot take new words without being
rebuilt (linear in its size), so new secrets go into small automata that are
merged as they grow, each at least twice the size of the next (the logarithmic
method: adding N secrets one by one costs O(N log N), never O(N²)); once as
many strings have been scrubbed since the last change as there are forms, the
levels are merged into one, so a controller whose secrets stopped changing
scans each string once.

Forgetting ("no reference names it any more"): the redactor is process-wide
and a reference can resolve to a new value while the process runs (a rotated
file, a Vault agent's token). Each reference keeps two generations: the value
it resolves to now, and the one before, because text made with the old value
may still be on its way out (a task that started before the rotation, a remote
echoing the old token in an error). At the next rotation the older value is
forgotten unless another reference still names it. Values registered without
a reference (`add`) are kept for the life of the process; so are the last two
values of a reference that is no longer declared (bounded by the references
ever resolved; a restart forgets them). Forgotten forms leave the automaton
at its next rebuild; until then they are still scrubbed, which is harmless.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import ahocorasick  # a C extension without stubs (ignore_missing_imports in pyproject)

from reconciler.errors import PermanentError
from reconciler.model.common import SECRET_LOOKING_KEY, is_secret_ref

REDACTED = "***"
MIN_SCRUBBED = 4
"""Shorter values would redact ordinary text ("a", "1"): they are still hidden where
they are a whole value (`Redactor.data`), but not scrubbed from inside other text."""
GENERATIONS = 2
"""Values remembered per reference: the current one and the one before it."""
CONSOLIDATE_AFTER = 256
"""Strings scrubbed (at least, and at least one per form) before the levels are merged."""

_PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


def _all_but(encoded: str) -> str:
    return "".join(c for c in _PRINTABLE if c not in encoded)


URL_SAFE_SETS = (
    "",  # every reserved character encoded: quote(v, safe="")
    "/",  # urllib.parse.quote's default
    "-_.!~*'()",  # JavaScript's encodeURIComponent
    _all_but(' "#<>'),  # the WHATWG query percent-encode set (httpx, browsers)
    _all_but(' "#<>?`{}'),  # the WHATWG path set
    _all_but(' "#<>?`{}/:;=@[\\]^|'),  # the WHATWG userinfo set (user:password@host)
)
"""Characters each URL encoder leaves alone: a secret in a URL is scrubbed whichever
encoder built it (``%`` itself stays as is in the WHATWG sets, as there)."""


class SecretUnavailable(PermanentError):
    """A reference points at nothing: the env var is unset or the file unreadable."""


def _escaped(text: str) -> set[str]:
    """`text` inside a JSON string (ASCII or not) and inside a Python repr."""
    return {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], repr(text)[1:-1]}


def _url_encoded(text: str) -> set[str]:
    return {quote_plus(text), *(quote(text, safe=safe) for safe in URL_SAFE_SETS)}


def encoded_forms(value: str) -> frozenset[str]:
    """`value` and the encodings it takes in JSON, repr, URLs and base64, alone and one
    inside another (a URL or a JSON body repeated in a JSON error, JSON in a query)."""
    once = _escaped(value) | _url_encoded(value)
    forms = {value, base64.b64encode(value.encode()).decode(), *once}
    forms |= {twice for f in once for twice in _escaped(f) | _url_encoded(f)}
    forms |= {_PERCENT_HEX.sub(lambda m: m.group(0).lower(), f) for f in forms if "%" in f}
    return frozenset(forms)


@dataclass
class _Entry:
    """One secret value: every string scrubbed for it, and the references naming it."""

    forms: set[str]
    refs: set[str] = field(default_factory=set)
    pinned: bool = False
    """Registered without a reference (`Redactor.add`): never forgotten."""


@dataclass(frozen=True)
class _Level:
    """An immutable automaton over some forms: readers use it without a lock."""

    forms: frozenset[str]
    automaton: Any  # ahocorasick.Automaton
    shortest: int

    @classmethod
    def build(cls, forms: frozenset[str]) -> _Level:
        automaton = ahocorasick.Automaton()
        for form in forms:
            automaton.add_word(form, len(form))
        automaton.make_automaton()
        return cls(forms, automaton, min(map(len, forms)))


def _spans(levels: tuple[_Level, ...], text: str) -> list[tuple[int, int]]:
    return [
        (end - length + 1, end + 1)
        for level in levels
        for end, length in level.automaton.iter(text)
    ]


def _punch(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with the union of `spans` replaced, each run of overlapping spans by one
    ``***``: a secret inside or across another leaves no fragment."""
    spans.sort()
    out: list[str] = []
    cursor = 0
    begin, end = spans[0]
    for start, stop in spans[1:]:
        if start <= end:
            end = max(end, stop)
            continue
        out += [text[cursor:begin], REDACTED]
        cursor, begin, end = end, start, stop
    out += [text[cursor:begin], REDACTED, text[end:]]
    return "".join(out)


class Redactor:
    """Remembers secret values seen in this process and scrubs them from text and data."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_ref: dict[str, tuple[str, ...]] = {}
        self._live: dict[str, int] = {}
        """Every remembered form (short ones too), with how many entries hold it."""
        self._stale = 0  # forgotten forms still inside a level
        self._levels: tuple[_Level, ...] = ()  # largest first
        self._reads = 0
        self._lock = threading.Lock()
        self.generation = 0
        """Grows with every secret added: text redacted before may hold the new one."""

    # --- learning and forgetting ---------------------------------------------------

    def add(self, value: str) -> None:
        """Register a value no reference names (a token a login returned): kept for good."""
        if value:
            with self._lock:
                self._learn(value).pinned = True

    def remember(self, ref: str, value: str) -> None:
        """`ref` resolves to `value` now; a value two resolutions old is forgotten."""
        if not value or self._by_ref.get(ref, ())[:1] == (value,):
            return
        with self._lock:
            history = self._by_ref.get(ref, ())
            kept = (value, *(v for v in history if v != value))[:GENERATIONS]
            self._by_ref[ref] = kept
            self._learn(value).refs.add(ref)
            for old in history:
                if old not in kept:
                    self._release(ref, old)

    def add_derived(self, source: str, derived: str) -> None:
        """`derived` is made from the secret `source` (a basic-auth token): it is
        scrubbed, in its encodings too, for as long as `source` is remembered."""
        if not derived:
            return
        with self._lock:
            entry = self._entries.get(source)
            if entry is None:
                self._learn(derived).pinned = True
                return
            new = encoded_forms(derived) - entry.forms
            if new:
                entry.forms |= new
                self._insert(new)

    def _learn(self, value: str) -> _Entry:
        entry = self._entries.get(value)
        if entry is None:
            entry = self._entries[value] = _Entry(forms=set(encoded_forms(value)))
            self._insert(entry.forms)
        return entry

    def _insert(self, forms: set[str] | frozenset[str]) -> None:
        """New forms: counted, and scanned for from now on (a new smallest level,
        merged with the levels that are not at least twice its size)."""
        fresh = []
        for form in forms:
            self._live[form] = self._live.get(form, 0) + 1
            if self._live[form] == 1:
                fresh.append(form)
        self.generation += 1
        level = frozenset(f for f in fresh if len(f) >= MIN_SCRUBBED)
        if not level:
            return
        levels = list(self._levels)
        while levels and len(levels[-1].forms) <= 2 * len(level):
            level |= levels.pop().forms
        self._levels = (*levels, _Level.build(level))
        self._reads = 0

    def _release(self, ref: str, value: str) -> None:
        entry = self._entries.get(value)
        if entry is None:
            return
        entry.refs.discard(ref)
        if entry.refs or entry.pinned:
            return
        del self._entries[value]
        for form in entry.forms:
            self._live[form] -= 1
            if not self._live[form]:
                del self._live[form]
                self._stale += len(form) >= MIN_SCRUBBED
        if self._stale > max(CONSOLIDATE_AFTER, len(self._live) // 4):
            self._consolidate()

    def _consolidate(self) -> None:
        """One automaton over the live forms (the lock is held)."""
        forms = frozenset(f for f in self._live if len(f) >= MIN_SCRUBBED)
        self._levels = (_Level.build(forms),) if forms else ()
        self._stale = 0
        self._reads = 0

    def forgotten(self, value: str) -> bool:
        """True when `value` is no longer remembered."""
        return value not in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def scanned_forms(self) -> int:
        """Forms the automata hold: the live ones, and forgotten ones until a rebuild."""
        return sum(len(level.forms) for level in self._levels)

    @property
    def levels(self) -> int:
        """Automata a string is scanned with (1 once the secrets stopped changing)."""
        return len(self._levels)

    # --- scrubbing -----------------------------------------------------------------

    def text(self, text: str) -> str:
        """`text` with every remembered secret, in any of its forms, replaced by ``***``."""
        levels = self._levels
        if not levels or len(text) < MIN_SCRUBBED:
            return text
        if len(levels) == 1:  # the steady state: one scan, and none of text too short to hold one
            if len(text) < levels[0].shortest:
                return text
            spans = [(end - n + 1, end + 1) for end, n in levels[0].automaton.iter(text)]
            return _punch(text, spans) if spans else text
        self._reads += 1
        if self._reads > max(CONSOLIDATE_AFTER, len(self._live)) and self._lock.acquire(
            blocking=False
        ):
            try:
                self._consolidate()
            finally:
                self._lock.release()
        spans = _spans(levels, text)
        return _punch(text, spans) if spans else text

    def truncate(self, text: str, limit: int, *, marker: str = "…") -> str:
        """`text` redacted, then cut to `limit` characters (plus `marker` when cut):
        the cut can never fall inside a secret."""
        redacted = self.text(text)
        return redacted if len(redacted) <= limit else redacted[:limit] + marker

    def data(self, data: Any) -> Any:
        """A copy of JSON-like data with every secret value (and inside strings) scrubbed."""
        if isinstance(data, str):
            return REDACTED if data in self._live else self.text(data)
        if isinstance(data, dict):
            return {k: self.data(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.data(v) for v in data]
        return data


REDACTOR = Redactor()


def resolve(ref: str, *, base_dir: Path | None = None) -> str:
    """The secret a reference points at; registered for redaction before it is returned."""
    value = read_ref(ref, base_dir=base_dir)
    REDACTOR.remember(ref, value)
    return value


def read_ref(ref: str, *, base_dir: Path | None = None) -> str:
    """The value behind a reference, *not* registered: only for checking it resolves
    (`reconciler.execute.secret_check`), never for a value that is used or shown."""
    if not is_secret_ref(ref):
        raise SecretUnavailable("not a secret reference (expected env:NAME or file:PATH)")
    scheme, _, target = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(target)
        if value is None:
            raise SecretUnavailable(f"secret reference {ref}: environment variable is not set")
        return value
    path = _ref_path(target, base_dir)
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SecretUnavailable(f"secret reference {ref}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SecretUnavailable(f"secret reference {ref}: the file is not UTF-8 text") from None


def _ref_path(target: str, base_dir: Path | None) -> Path:
    path = Path(target).expanduser()
    return base_dir / path if base_dir is not None and not path.is_absolute() else path


def is_secret_header(name: str) -> bool:
    """An HTTP header whose value is a secret: shown as ``***``, given by reference."""
    lowered = name.lower()
    return (
        lowered in {"authorization", "proxy-authorization", "cookie", "set-cookie"}
        or SECRET_LOOKING_KEY.search(name) is not None
    )


def basic_auth(user: str, password: str) -> str:
    """The ``Authorization`` value for HTTP basic auth; its base64 token is scrubbed
    (with its URL and JSON forms) for as long as `password` is remembered."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    REDACTOR.add_derived(password, token)
    return f"Basic {token}"


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> dict[str, Any]:
    """structlog processor: no log line carries a resolved secret."""
    return REDACTOR.data(event_dict)
