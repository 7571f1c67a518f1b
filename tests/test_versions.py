"""Libraries older than the minimums that carry security fixes are refused with one sentence."""

from __future__ import annotations

import pytest

from core import versions
from core.errors import KnownError


def test_this_environment_meets_the_minimums():
    versions.check(versions.APP | versions.ENGINE)


def test_an_older_library_is_refused_by_name():
    with pytest.raises(
        KnownError, match=r"Tunedesk needs pypdf 99\.0 or newer \(security fixes\); this environment has"
    ):
        versions.check({"pypdf": "99.0"})


def test_versions_compare_as_numbers():
    assert versions._key("6.10.0") > versions._key("6.9.1")
    assert versions._key("2.13.0+cpu") == (2, 13, 0)
