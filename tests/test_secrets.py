"""Redactor: every registered secret scrubbed from text and data, in every form it takes.

Pure unit tests on fresh `Redactor` values; the canaries carry the characters that
encodings change (quote, backslash, ``%``, ``+``, ``/``). The paths production takes
(task logs, journal, status, the API) are covered by tests/execute/test_canary.py and
tests/e2e/test_canary.py.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from urllib.parse import quote, quote_plus, urlencode

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.secrets import (
    REDACTED,
    REDACTOR,
    Redactor,
    basic_auth,
    encoded_forms,
    resolve,
)


def canary() -> str:
    return f'c"an\\ary%2F+/{uuid.uuid4().hex[:12]}'


def test_text_scrubs_longest_first_and_skips_short_values_inside_text() -> None:
    redactor = Redactor()
    assert redactor.text("nothing registered") == "nothing registered"
    for value in ("token", "token-extended", "abc"):
        redactor.add(value)
    assert redactor.text("a token-extended and a token") == f"a {REDACTED} and a {REDACTED}"
    assert redactor.text("abc stays inside text") == "abc stays inside text"
    redactor.add("stays")  # added later: in force from then on
    assert redactor.text("abc stays inside text") == f"abc {REDACTED} inside text"


def test_data_is_a_scrubbed_copy() -> None:
    redactor = Redactor()
    redactor.add("abc")
    redactor.add("s3cret")
    data = {"a": "abc", "b": ["x s3cret y", ("abc", 1)], "c": {"d": None, "e": 2.5}}
    scrubbed = redactor.data(data)
    assert scrubbed == {
        "a": REDACTED,  # a whole value is hidden however short
        "b": [f"x {REDACTED} y", [REDACTED, 1]],
        "c": {"d": None, "e": 2.5},
    }
    assert scrubbed["c"] is not data["c"] and data["a"] == "abc"


def test_overlapping_secrets_leave_no_fragment() -> None:
    redactor = Redactor()
    redactor.add("abcd1234")
    redactor.add("1234wxyz")
    assert redactor.text("<abcd1234wxyz>") == f"<{REDACTED}>"
    assert redactor.text("abcd1234 1234wxyz") == f"{REDACTED} {REDACTED}"


def test_every_encoding_of_a_secret_is_scrubbed() -> None:
    secret = canary()
    redactor = Redactor()
    redactor.add(secret)
    encoded = {
        "json": json.dumps({"token": f"x{secret}y"}),
        "json-ascii": json.dumps({"t": secret + "é"}, ensure_ascii=True),
        "repr": repr({"token": secret}),
        "url": f"https://h/p?{urlencode({'token': secret})}",
        "url-path": f"https://h/{quote(secret)}/x",
        "url-all": quote(secret, safe=""),
        "url-lower-hex": re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(secret, safe="")),
        "plus": quote_plus(secret),
        "base64": base64.b64encode(secret.encode()).decode(),
        "httpx-query": str(httpx.URL(f"https://h/p?token={secret}")),
        "httpx-path": str(httpx.URL(f"https://h/{secret}/x")),
        "httpx-params": str(httpx.URL("https://h/p", params={"token": secret})),
        "userinfo": str(httpx.URL(f"https://ada:{quote(secret, safe='')}@h/")),
    }
    for how, text in encoded.items():
        redacted = redactor.text(text)
        assert REDACTED in redacted, (how, text)
        for form in encoded_forms(secret):
            assert form not in redacted, (how, redacted)


def test_basic_auth_token_is_scrubbed_with_its_encodings() -> None:
    secret = canary()
    REDACTOR.add(secret)
    header = basic_auth("ada", secret)
    token = header.removeprefix("Basic ")
    assert base64.b64decode(token).decode() == f"ada:{secret}"
    for text in (header, quote(token, safe=""), json.dumps({"h": header})):
        assert token not in REDACTOR.text(text) and REDACTED in REDACTOR.text(text)


def test_truncate_redacts_before_it_cuts() -> None:
    secret = canary()
    redactor = Redactor()
    redactor.add(secret)
    for before in range(len(secret) + 2):
        text = "x" * before + secret + " tail"
        for limit in range(before, before + len(secret) + 1):
            cut = redactor.truncate(text, limit)
            assert secret[:4] not in cut, (before, limit, cut)
            assert len(cut) <= limit + 1
    assert redactor.truncate("short", 300) == "short"
    assert redactor.truncate("x" * 10, 4) == "xxxx…"


def test_a_rotated_secret_is_forgotten_at_the_second_rotation() -> None:
    redactor = Redactor()
    v1, v2, v3 = (f"rotated-{i}-{uuid.uuid4().hex}" for i in range(3))
    redactor.remember("file:/run/token", v1)
    redactor.remember("file:/run/token", v1)  # the same value again: nothing changes
    redactor.remember("file:/run/token", v2)
    # the previous generation stays: a task started before the rotation may still echo it
    assert redactor.text(f"{v1} {v2}") == f"{REDACTED} {REDACTED}"
    redactor.remember("file:/run/token", v3)
    assert redactor.forgotten(v1) and not redactor.forgotten(v2)
    assert len(redactor) == 2
    # another reference naming a value keeps it
    redactor.remember("env:OTHER", v2)
    redactor.remember("file:/run/token", f"rotated-4-{uuid.uuid4().hex}")
    assert not redactor.forgotten(v2)
    # a value registered without a reference is kept for good
    redactor.add(v3)
    redactor.remember("file:/run/token", "rotated-5-x")
    redactor.remember("file:/run/token", "rotated-6-x")
    assert not redactor.forgotten(v3)


def test_forgotten_forms_leave_the_matcher() -> None:
    redactor = Redactor()
    refs = 600
    old = [f"old-{i}-{uuid.uuid4().hex}" for i in range(refs)]
    for i, value in enumerate(old):
        redactor.remember(f"file:/run/{i}", value)
    for generation in range(10):  # ten rotations of every reference
        for i in range(refs):
            redactor.remember(f"file:/run/{i}", f"gen{generation}-{i}-{uuid.uuid4().hex}")
        live = 2 * refs * 2  # two values per reference, two forms each (as is, base64)
        assert len(redactor) == 2 * refs
        assert redactor.scanned_forms <= live + max(256, live // 4) + 1
    assert all(redactor.forgotten(v) for v in old)
    assert redactor.text(" ".join(old)) == " ".join(old)  # no longer scrubbed at all


def test_levels_stay_logarithmic_and_merge_into_one() -> None:
    redactor = Redactor()
    values = [f"secret-{i}-{uuid.uuid4().hex}" for i in range(2000)]
    most = 0
    for value in values:
        redactor.remember(f"env:S{value}", value)
        redactor.text("a line written between two new secrets")
        most = max(most, redactor.levels)
    forms = sum(len(encoded_forms(v)) for v in values)
    assert most <= math.log2(forms) + 1
    for _ in range(forms + 300):
        redactor.text("a line")
    assert redactor.levels == 1
    line = " | ".join(values[::97])
    assert redactor.text(line) == " | ".join([REDACTED] * len(values[::97]))


def test_resolve_registers_what_it_returns(monkeypatch: object, tmp_path: object) -> None:
    import pytest

    mp: pytest.MonkeyPatch = monkeypatch  # type: ignore[assignment]
    secret = canary()
    mp.setenv("RECONCILER_TEST_SECRET_X", secret)
    assert resolve("env:RECONCILER_TEST_SECRET_X") == secret
    assert REDACTOR.text(json.dumps(secret)) == f'"{REDACTED}"'


_ALPHABET = st.characters(blacklist_characters="*", blacklist_categories=("Cs",))


@settings(max_examples=200, deadline=None)
@given(
    secrets=st.lists(st.text(_ALPHABET, min_size=4, max_size=12), min_size=1, max_size=8),
    pieces=st.lists(st.text(_ALPHABET, max_size=6), max_size=8),
)
def test_no_registered_secret_survives_in_any_text(secrets: list[str], pieces: list[str]) -> None:
    redactor = Redactor()
    for value in secrets:
        redactor.add(value)
    text = "".join(p + s for p, s in zip(pieces, secrets * 2, strict=False)) + "".join(secrets)
    redacted = redactor.text(text)
    for value in secrets:
        assert value not in redacted
