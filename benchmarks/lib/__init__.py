"""What the benchmark scripts share. A study (benchmarks/*.py) imports it as ``lib``
(``from lib.common import machine``): Python puts a script's folder on its path.

- ``common``: the repository's paths (``RESULTS_DIR``: RESULTS.md, records, figures), the
  machine's description, a section of RESULTS.md, a selfsup command in a subprocess.
- ``records``: a study's JSON records, a quality record's key, group, run name and
  config fingerprint.
- ``budget``: a run on a budget of training time (the clocks, the compressed schedule).
- ``pipeline``: a config's pretraining DataLoader and its images/s.
- The quality study: ``methods`` (what it compares), ``quality_data`` (its data sets and
  baselines), ``evaluation`` (kNN, AUROC, probe), ``selfsup_side`` and ``lightly_side``
  (each side's run), ``lightly_recipes`` (lightly's recipes as LightningModules),
  ``runs`` (one run as a record), and its sections: ``render`` (their parts),
  ``render_variants`` (a config's versions and variants), ``render_cifar``,
  ``render_pneumonia``.
"""
