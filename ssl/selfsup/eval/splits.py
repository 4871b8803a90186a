"""Splits that keep a group (a patient) on one side: the validation split carved from a
training split, nested label-fraction subsets, and the groups two given splits share.

Labels are single-label ints ``(N,)`` or multi-label 0/1 ``(N, K)`` (stratified per
finding); ``groups`` is one id per image, or ``None`` when every image is its own group.

Both carvings are iterative stratification over groups (after Sechidis et al., "On the
stratification of multi-label data", ECML 2011): groups are visited rarest label first
(ties in a seeded random order) and each goes where it brings the per-class counts and the
size closest to their targets. The cost is the sum of squared relative misses,
``sum_c ((v_c - t_c) / t_c)^2 + ((n - t) / t)^2``, so a rare class weighs as much as a
common one. scikit-learn's ``StratifiedGroupKFold`` is not used: it gives k folds rather
than a fraction, its stratification takes one int label per sample (not multi-label), and
it cannot nest subsets or promise a class on each side.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from selfsup.errors import ConfigError


def _by_group(labels: Any, groups: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> counts ``(G, C)`` of each class (positives of each finding) per group, group
    sizes ``(G,)`` and each image's group index ``(N,)``."""
    y = np.asarray(labels)
    if y.ndim not in (1, 2) or len(y) == 0:
        raise ConfigError(f"labels must be (N,) ints or (N, K) 0/1 with N > 0; got {y.shape}.")
    n = len(y)
    if groups is None:
        inv = np.arange(n)
    else:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise ConfigError(f"groups {g.shape} must give one id per image ({n},).")
        inv = np.unique(g.astype(str), return_inverse=True)[1].reshape(-1)
    n_groups = int(inv.max()) + 1
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
            raise ConfigError("single-label labels must be non-negative ints (class indices).")
        onehot = np.zeros((n, int(y.max()) + 1))
        onehot[np.arange(n), y] = 1
    else:
        if not np.isin(y, (0, 1)).all():
            raise ConfigError("multi-label labels must be 0/1, one column per finding.")
        onehot = y.astype(float)
    counts = np.zeros((n_groups, onehot.shape[1]))
    np.add.at(counts, inv, onehot)
    return counts, np.bincount(inv, minlength=n_groups).astype(float), inv


class _Stratifier:
    """Per-class and size targets for one side, and the cost change of moving groups."""

    def __init__(self, counts: np.ndarray, sizes: np.ndarray, fraction: float) -> None:
        self.x, self.s = counts, sizes
        self.target = fraction * counts.sum(0)
        self.size_target = fraction * sizes.sum()
        self.w = 1.0 / np.maximum(self.target, 1.0) ** 2
        self.ws = 1.0 / max(self.size_target, 1.0) ** 2

    def delta(self, inside: np.ndarray, idx: np.ndarray, sign: float) -> np.ndarray:
        """Cost change of adding (sign +1) or removing (sign -1) each group ``idx``."""
        v = self.x[inside].sum(0) - self.target
        n = self.s[inside].sum() - self.size_target
        dx, ds = sign * self.x[idx], sign * self.s[idx]
        return (dx * (2 * v + dx)) @ self.w + self.ws * ds * (2 * n + ds)

    def fill(self, inside: np.ndarray, order: np.ndarray) -> None:
        """Greedy pass over the groups ``order`` (none of them inside yet): share ``q``
        of what they hold is still to be added, per class and in size; each group is added
        when that keeps the added counts closer to ``q`` times those of the groups visited
        so far. Running targets interleave the two sides whatever the visiting order
        (a fixed target would take every early group while its side still lacks images)."""
        x = np.concatenate([self.x[order], self.s[order, None]], 1)
        target = np.append(self.target, self.size_target)
        have = np.append(self.x[inside].sum(0), self.s[inside].sum())
        rest = x.sum(0)
        q = np.clip((target - have) / np.maximum(rest, 1e-12), 0.0, 1.0)
        w = 1.0 / np.maximum(q * rest, 1.0) ** 2
        seen, added = np.zeros_like(q), np.zeros_like(q)
        for g, dx in zip(order, x):
            seen += dx
            if (dx * (2 * (added - q * seen) + dx)) @ w < 0:
                inside[g] = True
                added += dx


def _visit_order(counts: np.ndarray, rank: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Groups ``idx`` rarest class first (fewest groups hold it), ties by seeded rank."""
    n_holding = (counts > 0).sum(0)
    rarity = np.where(counts[idx] > 0, n_holding, np.iinfo(np.int64).max).min(1)
    return idx[np.lexsort((rank[idx], rarity))]


def _blocked(holds: np.ndarray, side: np.ndarray, must: np.ndarray) -> np.ndarray:
    """Groups on ``side`` whose leaving would empty that side of a class in ``must``."""
    last = (holds[side].sum(0) == 1) & must
    return side & (holds & last).any(1)


def group_split(
    labels: Any, groups: Any, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation split of about ``fraction`` of the images from a training split,
    by group -> sorted image indices ``(train_idx, val_idx)``.

    Guarantees (deterministic for a ``seed``):

    - no group on both sides; both sides non-empty;
    - every class (finding) held by >= 2 groups is on both sides whenever one move per
      class can do it. Always so when each group's images share one label (single-label,
      patient-level labels, or ``groups=None``); with mixed groups a class can stay on one
      side only when each of its groups there is the last one on that side of another class
      (three groups each holding two of three findings cannot all be split);
    - ``|len(val_idx) - fraction * N| <= max group size / 2``, unless the heavy side holds
      one group, or each of its groups is the last one there of some class (the rules
      above win over the size).

    Algorithm: seeded random ranks; each class held by >= 2 groups, rarest first, gets its
    smallest free group on the validation side and a free group on the training side; the
    other groups are visited rarest class first and go to validation when that lowers the
    stratification cost (module docstring); one-sided classes are then repaired by moving
    one of their groups, and the size is brought within the bound by moving the groups that
    cost least, never the last group of a class on its side.
    """
    if not 0 < fraction < 1:
        raise ConfigError(f"validation fraction {fraction} must lie strictly between 0 and 1.")
    counts, sizes, inv = _by_group(labels, groups)
    n_groups = len(sizes)
    if n_groups < 2:
        raise ConfigError("a validation split needs at least two groups (patients); got one.")
    rng = np.random.default_rng(seed)
    rank = rng.permutation(n_groups)
    holds = counts > 0
    must = holds.sum(0) >= 2
    val = np.zeros(n_groups, bool)
    assigned = np.zeros(n_groups, bool)
    for c in np.lexsort((np.arange(len(must)), holds.sum(0))):
        if not must[c]:
            continue
        for to_val in (True, False):
            side = val if to_val else assigned & ~val
            free = np.flatnonzero(holds[:, c] & ~assigned)
            if (side & holds[:, c]).any() or len(free) == 0:
                continue
            key = (rank[free], sizes[free]) if to_val else (rank[free],)
            g = free[np.lexsort(key)[0]]
            assigned[g], val[g] = True, to_val
    strat = _Stratifier(counts, sizes, fraction)
    strat.fill(val, _visit_order(counts, rank, np.flatnonzero(~assigned)))
    _repair(holds, must, sizes, rank, val)
    half = sizes.max() / 2
    for _ in range(n_groups):
        n_val = sizes[val].sum()
        grow = (n_val < strat.size_target - half or not val.any()) and (~val).sum() > 1
        shrink = (n_val > strat.size_target + half or val.all()) and val.sum() > 1
        if not grow and not shrink:  # neither side is ever emptied
            break
        side = ~val if grow else val
        idx = np.flatnonzero(side & ~_blocked(holds, side, must))
        if len(idx) == 0:
            break
        cost = strat.delta(val, idx, 1.0 if grow else -1.0)
        g = idx[np.lexsort((rank[idx], cost))[0]]
        val[g] = grow
    return np.flatnonzero(~val[inv]), np.flatnonzero(val[inv])


def _repair(
    holds: np.ndarray, must: np.ndarray, sizes: np.ndarray, rank: np.ndarray, val: np.ndarray
) -> None:
    """Move a group of each one-sided class in ``must`` to the other side, the smallest
    that is not the last group of another class on its side; until nothing changes."""
    for _ in range(len(sizes)):
        moved = False
        for c in np.flatnonzero(must):
            on_val = val[holds[:, c]]
            if on_val.any() and not on_val.all():
                continue
            side = val if on_val.all() else ~val
            idx = np.flatnonzero(holds[:, c] & side & ~_blocked(holds, side, must))
            if len(idx):
                val[idx[np.lexsort((rank[idx], sizes[idx]))[0]]] = not on_val.all()
                moved = True
        if not moved:
            return


def label_fractions(
    labels: Any, groups: Any, fractions: Iterable[float], seed: int
) -> dict[float, np.ndarray]:
    """Nested, stratified subsets of a training split -> ``{fraction: sorted image indices}``
    in ascending order of fraction (each subset inside the next; 1.0 gives every image).

    Guarantees (deterministic for a ``seed``):

    - by group: a group is wholly in a subset or wholly out;
    - every class (finding) present in ``labels`` has at least one group in every subset,
      however small the fraction (the smallest group holding it, rarest class first);
    - sizes: ``fraction * N - m/2 <= len(subset) <= max(fraction * N + m/2, len(previous))``
      with ``m`` the largest group size and ``previous`` the next smaller subset (for the
      smallest fraction: the one-group-per-class floor above).

    Algorithm: the floor first, then for each fraction in turn the groups not yet chosen
    are visited rarest class first and added when that lowers the stratification cost
    against that fraction's targets (module docstring); the size is then brought within the
    bound by adding the cheapest groups or dropping this fraction's own additions.
    """
    fracs = sorted({float(f) for f in fractions})
    if not fracs or fracs[0] <= 0 or fracs[-1] > 1:
        raise ConfigError(f"label fractions {fracs} must lie in (0, 1]; e.g. 0.01 0.1 1.0.")
    counts, sizes, inv = _by_group(labels, groups)
    n_groups = len(sizes)
    rank = np.random.default_rng(seed).permutation(n_groups)
    holds = counts > 0
    chosen = np.zeros(n_groups, bool)
    for c in np.lexsort((np.arange(counts.shape[1]), holds.sum(0))):
        members = np.flatnonzero(holds[:, c])
        if len(members) and not chosen[members].any():
            chosen[members[np.lexsort((rank[members], sizes[members]))[0]]] = True
    half = sizes.max() / 2
    out: dict[float, np.ndarray] = {}
    for f in fracs:
        if f >= 1:
            chosen[:] = True
        else:
            before = chosen.copy()
            strat = _Stratifier(counts, sizes, f)
            strat.fill(chosen, _visit_order(counts, rank, np.flatnonzero(~chosen)))
            for _ in range(n_groups):
                n_in = sizes[chosen].sum()
                grow = n_in < strat.size_target - half
                if not grow and n_in <= strat.size_target + half:
                    break
                idx = np.flatnonzero(~chosen if grow else chosen & ~before)
                if len(idx) == 0:
                    break
                cost = strat.delta(chosen, idx, 1.0 if grow else -1.0)
                chosen[idx[np.lexsort((rank[idx], cost))[0]]] = grow
        out[f] = np.flatnonzero(chosen[inv])
    return out


def shared_groups(train_groups: Any, test_groups: Any) -> list[str]:
    """Group ids (as strings, sorted) that both splits hold; empty when either is ``None``."""
    if train_groups is None or test_groups is None:
        return []
    train = {str(g) for g in np.asarray(train_groups).reshape(-1)}
    return sorted(train & {str(g) for g in np.asarray(test_groups).reshape(-1)})
