"""Multi-label figures the way medical studies report them, and expected calibration error.

Every figure is computed by torchmetrics' functional API on the whole split at once (the
caller gathers a split that DDP spread over processes first, so each sample counts once);
nothing here ranks scores by hand.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_calibration_error,
    multilabel_auroc,
    multilabel_average_precision,
)

from selfsup.errors import ConfigError


def _as_tensors(scores: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores).detach().cpu().double()
    targets = torch.as_tensor(targets).detach().cpu().long()
    return scores, targets


def multilabel_report(scores: Any, targets: Any, names: list[str] | None = None) -> dict[str, Any]:
    """Per-finding and averaged figures for ``scores`` ``(N, K)`` and 0/1 ``targets`` ``(N, K)``.

    ``scores`` may be probabilities or logits (AUROC and AP depend only on the ranking;
    torchmetrics applies a sigmoid to scores outside [0, 1]). ``names`` names the K
    findings (``"0"``, ``"1"``, ... without).

    Returns a dict with:

    - ``auroc``, ``average_precision``, ``prevalence``: ``{name: value}`` per finding.
      A finding with only one class present in ``targets`` (no positives, or no negatives)
      has no ROC curve: its AUROC and AP are ``None``, not torchmetrics' 0 with a warning.
    - ``macro_auroc`` and ``mAP``: means over the findings with both classes present only
      (one-class findings are left out, not counted as 0); ``n_findings_averaged`` says how
      many of the ``n_findings`` went into them. ``None`` when no finding has both classes.
    - ``micro_auroc``: AUROC of all (sample, finding) pairs pooled, every finding included
      (as scikit-learn's ``roc_auc_score(average="micro")``); ``None`` if the pool is one class.
    - ``n_samples``, ``n_findings``.
    """
    scores, targets = _as_tensors(scores, targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ConfigError(
            f"multi-label scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must "
            "both be (N, K); pass one 0/1 column per finding."
        )
    if not bool(((targets == 0) | (targets == 1)).all()):
        raise ConfigError("multi-label targets must be 0/1; binarise the label matrix first.")
    n, k = scores.shape
    names = [str(x) for x in names] if names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ConfigError(f"{len(names)} finding names for {k} score columns; give one per column.")
    positives = targets.sum(0)
    both = (positives > 0) & (positives < n)
    valid = both.nonzero().flatten()
    auroc: dict[str, float | None] = dict.fromkeys(names)
    ap: dict[str, float | None] = dict.fromkeys(names)
    macro = mean_ap = micro = None
    if len(valid):
        s, t = scores[:, valid], targets[:, valid]
        per_auroc = multilabel_auroc(s, t, num_labels=len(valid), average="none")
        per_ap = multilabel_average_precision(s, t, num_labels=len(valid), average="none")
        for j, i in enumerate(valid.tolist()):
            auroc[names[i]] = float(per_auroc[j])
            ap[names[i]] = float(per_ap[j])
        macro = float(per_auroc.mean())
        mean_ap = float(per_ap.mean())
    pooled = int(positives.sum())
    if 0 < pooled < n * k:
        micro = float(multilabel_auroc(scores, targets, num_labels=k, average="micro"))
    prevalence = positives.double() / max(n, 1)
    return {
        "auroc": auroc,
        "average_precision": ap,
        "prevalence": {names[i]: float(prevalence[i]) for i in range(k)},
        "macro_auroc": macro,
        "micro_auroc": micro,
        "mAP": mean_ap,
        "n_findings_averaged": len(valid),
        "n_findings": k,
        "n_samples": n,
    }


def calibration_error(probs: Any, targets: Any, n_bins: int = 15) -> float:
    """Expected calibration error (L1, ``n_bins`` equal-width bins over [0, 1]).

    - Single-label: ``probs`` ``(N, C)`` class probabilities, int ``targets`` ``(N,)``: the
      top-label ECE, sum over bins of (share of samples) × |accuracy − mean confidence|,
      where confidence is the highest probability and accuracy whether it was the target.
    - Multi-label: ``probs`` ``(N, K)`` per-finding probabilities, 0/1 ``targets`` ``(N, K)``:
      each finding's binary ECE (confidence is the predicted probability of the finding,
      accuracy its frequency in the bin), averaged over the K findings.

    Pass probabilities (softmax or sigmoid outputs): torchmetrics would normalise scores
    outside [0, 1] itself, which hides a caller passing logits by mistake.
    """
    probs, targets = _as_tensors(probs, targets)
    if probs.ndim != 2 or len(probs) != len(targets) or targets.ndim not in (1, 2):
        raise ConfigError(
            f"calibration needs probs (N, C) with targets (N,) or (N, K); got "
            f"{tuple(probs.shape)} and {tuple(targets.shape)}."
        )
    if bool((probs < 0).any()) or bool((probs > 1).any()):
        raise ConfigError("calibration_error takes probabilities in [0, 1]; apply softmax/sigmoid.")
    if len(probs) == 0:
        raise ConfigError("calibration_error got no samples; evaluate on a non-empty split.")
    if targets.ndim == 1:
        if probs.shape[1] == 1:  # one class: torchmetrics counts two or more; add an empty one
            probs = torch.cat([probs, torch.zeros_like(probs)], 1)
        c = probs.shape[1]
        return float(multiclass_calibration_error(probs, targets, num_classes=c, n_bins=n_bins))
    if targets.shape != probs.shape:
        raise ConfigError(
            f"multi-label probs {tuple(probs.shape)} and targets {tuple(targets.shape)} differ."
        )
    per_finding = [
        binary_calibration_error(
            probs[:, i].contiguous(), targets[:, i].contiguous(), n_bins=n_bins
        )
        for i in range(probs.shape[1])
    ]
    return float(torch.stack(per_finding).mean())
