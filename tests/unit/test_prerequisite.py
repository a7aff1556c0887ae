"""A missing prerequisite fails the run in CI and skips the test elsewhere."""

import pytest

from tests.support.prerequisite import missing


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_in_ci_a_missing_prerequisite_fails(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="no docker"):
        missing("no docker")


def test_elsewhere_it_skips_saying_why(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no docker"):
        missing("no docker")
