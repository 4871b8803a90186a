"""The readers: one module per kind of source, each turning files into labelled samples.

- :mod:`~selfsup.data.readers.arrays`: ``.npz`` archives (selfsup's and MedMNIST's layout);
- :mod:`~selfsup.data.readers.folders`: image and DICOM trees (``train/<class>/`` or unlabelled);
- :mod:`~selfsup.data.readers.dicom`: DICOM files as radiology displays them;
- :mod:`~selfsup.data.readers.volumes`: NIfTI volumes read as slices;
- :mod:`~selfsup.data.readers.manifest`: CSV/TSV manifests with labels, groups and splits;
- :mod:`~selfsup.data.readers.patterns`: the built-in ``patterns`` set.

The infrastructure they share stays one floor up in :mod:`selfsup.data`: pixels and the
reading options (``pixels``), labels and groups (``labels``), the dispatcher from ``DATA``
to a reader (``datasets``), seeded streams, the DataModule and the data summary.
"""
