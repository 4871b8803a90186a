"""Schedules as pure functions of the step, against their closed forms."""

import pytest

from selfsup.schedules import linear, warmup_cosine


def test_warmup_cosine_closed_form():
    assert warmup_cosine(0, 100, 10, 1.0, 0.0) == 0.0
    assert warmup_cosine(5, 100, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(10, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(150, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert linear(5, 10, 0.996, 1.0) == pytest.approx(0.998)
