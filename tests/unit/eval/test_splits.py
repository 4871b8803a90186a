"""Group splits, label fractions and shared groups, on random group assignments.

Bounds the module promises and these tests hold it to (m = largest group size):
- group_split: no group on both sides; every class held by >= 2 groups on both sides
  (always with patient-level labels; with mixed groups unless each of its groups there is
  the last of another class); ``|len(val) - f*N| <= m/2`` unless the heavy side holds one
  group or only such last groups; with patient-level labels each class's validation count within
  ``m`` of ``f * count`` (classes of >= 10 groups), multi-label findings within
  ``5 % of positives + m``.
- label_fractions: nested; by group; every present class in every subset; sizes
  ``f*N - m/2 <= len <= max(f*N + m/2, len(previous))``; each class within ``m`` of
  ``f * count`` with patient-level labels.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfsup.errors import ConfigError
from selfsup.eval.splits import group_split, label_fractions, shared_groups

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def grouped(draw, multi: bool = False, patient_labels: bool = False, max_groups: int = 25):
    """(labels, groups) with random group assignments and label counts."""
    seed = draw(st.integers(0, 2**31 - 1))
    n_groups = draw(st.integers(2, max_groups))
    n_classes = draw(st.integers(1, 5))
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, draw(st.integers(1, 4)) + 1, n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    rng.shuffle(groups)
    n = len(groups)
    if multi:
        rate = rng.uniform(0.02, 0.6, n_classes)
        per = rng.random((n_groups if patient_labels else n, n_classes)) < rate
        labels = (per[groups] if patient_labels else per).astype(np.int64)
    else:
        per = rng.integers(0, n_classes, n_groups if patient_labels else n)
        labels = per[groups] if patient_labels else per
    return labels, np.array([f"p{g}" for g in groups])


def holds_matrix(labels, groups):
    """(group ids, bool (G, C) group holds class, group sizes)."""
    ids, inv = np.unique(groups, return_inverse=True)
    onehot = labels if labels.ndim == 2 else np.eye(labels.max() + 1, dtype=int)[labels]
    counts = np.zeros((len(ids), onehot.shape[1]))
    np.add.at(counts, inv, onehot)
    return inv, counts > 0, np.bincount(inv)


def last_on_side(holds, side, must):
    """Groups on ``side`` that are the only group there of some class in ``must``."""
    last = (holds[side].sum(0) == 1) & must
    return side & (holds & last).any(1)


def check_split(labels, groups, fraction, train, val, strict: bool):
    n = len(labels)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
    assert len(train) and len(val)
    assert not set(groups[train]) & set(groups[val])
    inv, holds, sizes = holds_matrix(labels, groups)
    on_val = np.zeros(len(sizes), bool)
    on_val[inv[val]] = True
    must = holds.sum(0) >= 2
    for c in np.flatnonzero(must):
        sides = on_val[holds[:, c]]
        if sides.all() or not sides.any():
            assert not strict, f"class {c} on one side"
            side = on_val if sides.all() else ~on_val
            blocked = last_on_side(holds, side, must)
            assert blocked[holds[:, c] & side].all()
    half = sizes.max() / 2
    if len(val) > fraction * n + half and on_val.sum() > 1:
        assert last_on_side(holds, on_val, must)[on_val].all()
    if len(val) < fraction * n - half and (~on_val).sum() > 1:
        assert last_on_side(holds, ~on_val, must)[~on_val].all()


fractions = st.floats(0.01, 0.9)


@SETTINGS
@given(grouped(patient_labels=True), fractions, st.integers(0, 99))
def test_group_split_patient_labels(data, fraction, seed):
    labels, groups = data
    train, val = group_split(labels, groups, fraction, seed)
    check_split(labels, groups, fraction, train, val, strict=True)


@SETTINGS
@given(grouped(), fractions, st.integers(0, 99))
def test_group_split_mixed_groups(data, fraction, seed):
    labels, groups = data
    train, val = group_split(labels, groups, fraction, seed)
    check_split(labels, groups, fraction, train, val, strict=False)


@SETTINGS
@given(grouped(multi=True, patient_labels=True), fractions, st.integers(0, 99))
def test_group_split_multilabel(data, fraction, seed):
    labels, groups = data
    train, val = group_split(labels, groups, fraction, seed)
    check_split(labels, groups, fraction, train, val, strict=False)


@SETTINGS
@given(st.integers(2, 60), st.integers(1, 6), fractions, st.integers(0, 99))
def test_group_split_without_groups_is_per_image(n, n_classes, fraction, seed):
    labels = np.random.default_rng(seed).integers(0, n_classes, n)
    train, val = group_split(labels, None, fraction, seed)
    check_split(labels, np.arange(n).astype(str), fraction, train, val, strict=True)


def test_three_findings_on_three_groups_cannot_all_be_split():
    # each pair of groups shares a finding: any two-sided split leaves one finding one-sided
    labels = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]])
    train, val = group_split(labels, ["a", "b", "c"], 0.3, 0)
    check_split(labels, np.array(["a", "b", "c"]), 0.3, train, val, strict=False)


def patient_level(seed: int, n_groups: int, n_classes: int, multi: bool = False):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    if multi:
        per = (rng.random((n_groups, n_classes)) < rng.uniform(0.2, 0.5, n_classes)).astype(int)
    else:  # every class held by at least 10 groups
        per = np.concatenate(
            [np.arange(n_classes).repeat(10), rng.integers(0, n_classes, n_groups)]
        )
        per = rng.permutation(per[:n_groups])
    return per[groups], groups, sizes.max()


@SETTINGS
@given(st.integers(0, 10**6), st.integers(40, 150), st.integers(2, 4), st.floats(0.05, 0.5))
def test_group_split_is_stratified(seed, n_groups, n_classes, fraction):
    labels, groups, m = patient_level(seed, n_groups, n_classes)
    _, val = group_split(labels, groups, fraction, seed)
    total = np.bincount(labels, minlength=n_classes)
    assert np.abs(np.bincount(labels[val], minlength=n_classes) - fraction * total).max() <= m
    ml, groups, m = patient_level(seed, n_groups, n_classes, multi=True)
    _, val = group_split(ml, groups, fraction, seed)
    pos = ml.sum(0)
    assert (np.abs(ml[val].sum(0) - fraction * pos) <= 0.05 * pos + m).all()


def test_group_split_is_deterministic_per_seed():
    labels, groups, _ = patient_level(0, 100, 3)
    a, b, c = (group_split(labels, groups, 0.2, s) for s in (7, 7, 8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_group_split_refuses_what_cannot_work():
    with pytest.raises(ConfigError, match="between 0 and 1"):
        group_split(np.zeros(4, int), None, 1.0, 0)
    with pytest.raises(ConfigError, match="two groups"):
        group_split(np.zeros(4, int), ["a"] * 4, 0.5, 0)
    with pytest.raises(ConfigError, match="one id per image"):
        group_split(np.zeros(4, int), ["a", "b"], 0.5, 0)


def check_fractions(labels, groups, subsets, fracs):
    n = len(labels)
    inv, holds, sizes = holds_matrix(labels, groups)
    assert list(subsets) == sorted(set(fracs))  # duplicates collapse
    present = holds.any(0)
    half, previous = sizes.max() / 2, None
    floor = sum(sizes[holds[:, c]].min() for c in np.flatnonzero(present))
    for f, idx in subsets.items():
        assert np.array_equal(idx, np.unique(idx))
        inside = np.zeros(len(sizes), bool)
        inside[inv[idx]] = True
        assert np.array_equal(np.flatnonzero(inside[inv]), idx)  # whole groups only
        assert holds[inside].any(0)[present].all()  # every present class, however small f
        assert len(idx) >= f * n - half
        assert len(idx) <= max(f * n + half, floor if previous is None else len(previous))
        if previous is not None:
            assert set(previous) <= set(idx)
        previous = idx
    if 1.0 in subsets:
        assert len(subsets[1.0]) == n


fraction_lists = st.lists(st.floats(0.001, 1.0), min_size=1, max_size=4)


@SETTINGS
@given(grouped(), fraction_lists, st.integers(0, 99))
def test_label_fractions_by_group(data, fracs, seed):
    labels, groups = data
    check_fractions(labels, groups, label_fractions(labels, groups, fracs, seed), fracs)


@SETTINGS
@given(grouped(multi=True), fraction_lists, st.integers(0, 99))
def test_label_fractions_multilabel(data, fracs, seed):
    labels, groups = data
    check_fractions(labels, groups, label_fractions(labels, groups, fracs, seed), fracs)


@SETTINGS
@given(st.integers(0, 10**6), st.integers(40, 150), st.integers(2, 4))
def test_label_fractions_are_stratified(seed, n_groups, n_classes):
    labels, groups, m = patient_level(seed, n_groups, n_classes)
    total = np.bincount(labels, minlength=n_classes)
    for f, idx in label_fractions(labels, groups, [0.05, 0.2, 0.5], seed).items():
        assert np.abs(np.bincount(labels[idx], minlength=n_classes) - f * total).max() <= m


def test_rare_class_is_kept_when_its_fraction_rounds_to_zero():
    labels = np.array([0] * 995 + [1] * 3 + [2] * 2)
    groups = np.arange(1000) // 1  # one image per patient
    subsets = label_fractions(labels, groups, [0.01, 0.1, 1.0], seed=3)
    for idx in subsets.values():
        assert set(np.unique(labels[idx])) == {0, 1, 2}
    small = labels[subsets[0.01]]  # 0.01 * 1000 = 10 images; classes 1 and 2 round to 0
    assert len(small) == 10 and np.bincount(small)[1:].tolist() == [1, 1]
    ml = np.zeros((1000, 3), int)
    ml[:, 0] = 1
    ml[:2, 1] = 1
    ml[500, 2] = 1
    small = label_fractions(ml, None, [0.001], seed=0)[0.001]
    assert ml[small].sum(0).min() >= 1


def test_label_fractions_deterministic_per_seed_and_validated():
    labels, groups, _ = patient_level(1, 120, 3)
    a, b, c = (label_fractions(labels, groups, [0.1, 0.3], s) for s in (5, 5, 6))
    assert all(np.array_equal(a[f], b[f]) for f in a)
    assert not np.array_equal(a[0.3], c[0.3])
    for bad in ([0.0, 0.5], [1.5], []):
        with pytest.raises(ConfigError, match=r"\(0, 1\]"):
            label_fractions(labels, groups, bad, 0)


@given(st.sets(st.integers(0, 30)), st.sets(st.integers(0, 30)))
def test_shared_groups_exactly_when_splits_share_a_group(train, test):
    train_groups = np.array([f"p{g}" for g in sorted(train) for _ in range(2)])
    test_groups = np.array([f"p{g}" for g in sorted(test)])
    shared = shared_groups(train_groups, test_groups)
    assert shared == sorted(f"p{g}" for g in train & test)
    assert bool(shared) == bool(train & test)


def test_shared_groups_without_groups_is_empty():
    assert shared_groups(None, ["a"]) == [] and shared_groups(["a"], None) == []
    assert shared_groups([1, 2], np.array([2, 3])) == ["2"]
