"""The loader's named queries: each placeholder has a checked parameter, and checks hold."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loader.queries import MAX_MINUTES, NAMED, BadParams

PLACEHOLDER = re.compile(r"\{(\w+):\w+\}")


@pytest.mark.parametrize("name", sorted(NAMED))
def test_placeholders_are_exactly_the_declared_params(name: str) -> None:
    named = NAMED[name]
    assert set(PLACEHOLDER.findall(named.sql)) == set(named.params), name
    # nothing else that looks like a template: a stray {x} would never be bound
    assert not re.search(r"\{(?!\w+:\w+\})", named.sql), name


def test_bind_accepts_in_range_and_names_the_bad_field() -> None:
    q = NAMED["dash_failures"]
    assert q.bind({"minutes": MAX_MINUTES, "limit": 1}) == {"minutes": MAX_MINUTES, "limit": 1}
    for params, field in [(None, "params.minutes"), ({"minutes": 5}, "params.limit"),
                          ({"minutes": 5, "limit": 101}, "params.limit"),
                          ({"minutes": 5.0, "limit": 1}, "params.minutes"),
                          ({"minutes": 5, "limit": 1, "sql": "x"}, "params.sql"),
                          ([], "params")]:
        with pytest.raises(BadParams) as exc:
            q.bind(params)
        assert exc.value.field == field, params


def test_notification_id_refuses_control_characters() -> None:
    q = NAMED["fanout_outcomes"]
    assert q.bind({"id": "n-1' OR 1=1 --"}) == {"id": "n-1' OR 1=1 --"}  # a value, bound
    for bad in ["", "a\nb", "x" * 257, 5]:
        with pytest.raises(BadParams):
            q.bind({"id": bad})


@given(st.dictionaries(st.text(max_size=8), st.none() | st.booleans() | st.integers()
                       | st.floats() | st.text(max_size=300) | st.lists(st.integers())))
def test_bind_raises_only_bad_params(params: dict) -> None:
    for named in NAMED.values():
        try:
            named.bind(params)
        except BadParams:
            pass
