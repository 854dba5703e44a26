"""`dump_yaml` writes PyYAML's text, faster: the same bytes for any JSON-like data."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler.report.yaml_text import SAFE_DUMPER, dump_yaml

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def pyyaml(data: Any) -> str:
    return yaml.dump(data, Dumper=SAFE_DUMPER, sort_keys=False, allow_unicode=True)


# Strings PyYAML must quote, fold at 80 columns or escape, among ordinary ones.
TRICKY = st.sampled_from(
    ["", "true", "no", "~", "null", "1e3", "0x1F", "12:30", "- a", "a: b", "#c", "'q'", " x"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=120)
    | TRICKY
    | st.just("word " * 30)
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12) | SCALARS, inner, max_size=4)
    ),
    max_leaves=30,
)


@given(JSON_LIKE)
def test_dump_yaml_writes_pyyaml_text(data: Any) -> None:
    assert dump_yaml(data) == pyyaml(data)


def test_dump_yaml_leaves_what_is_not_json_to_pyyaml() -> None:
    shared = {"a": 1}
    for data in (
        {"x": shared, "y": shared},  # one container twice: an anchor and an alias
        {"when": date(2026, 11, 29), "t": (1, 2)},
        [T0, T0],
    ):
        assert dump_yaml(data) == pyyaml(data)
    assert "&id001" in dump_yaml({"x": shared, "y": shared})
