"""Redactor: every registered secret scrubbed from text and data, the longest first."""

from __future__ import annotations

from reconciler.secrets import REDACTED, Redactor


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
