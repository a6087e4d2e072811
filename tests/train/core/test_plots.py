"""Plot file names: one per take, never shared, never a path."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from blendsync.train.core.plots import plot_file_names


def test_takes_of_the_same_name_in_two_folders_get_two_files():
    """evaluate --plots wrote spk1/take1 and spk2/take1 both to take1.png."""
    assert plot_file_names(["spk1/take1", "spk2/take1", "spk1_take1", "../x"]) == {
        "spk1/take1": "spk1_take1.png",
        "spk2/take1": "spk2_take1.png",
        "spk1_take1": "spk1_take1-2.png",
        "../x": "_x.png",
    }


@given(st.lists(st.text(min_size=0, max_size=12), unique=True, max_size=30))
def test_names_are_distinct_plain_file_names(ids):
    names = plot_file_names(ids)
    assert set(names) == set(ids)
    assert len({n.lower() for n in names.values()}) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.png", n) for n in names.values())
