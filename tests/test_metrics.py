"""Tests of gamornet.science.metrics beyond those of the demo's table (tests/test_demo.py)."""

import numpy as np
import pytest

from gamornet.science.metrics import classes_from_names, confusion_counts, format_handbook_table, summary_metrics


def test_purity_and_class_names():
    counts = np.array([[40, 5, 5], [2, 6, 2], [1, 4, 35]])
    metrics = summary_metrics(counts)
    assert metrics["disk_purity"] == pytest.approx(40 / 43) and metrics["bulge_purity"] == pytest.approx(35 / 42)
    assert np.isnan(summary_metrics(np.zeros((3, 3), dtype=int))["disk_recall"])
    names = ["disk", "bulge", "indeterminate", "disk"]
    assert classes_from_names(names).tolist() == [0, 2, 1, 0]
    assert confusion_counts([0, 2, 2, 1], classes_from_names(names)).tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert format_handbook_table(counts, title="Shifted test set").startswith("| Shifted test set           |")
    with pytest.raises(ValueError, match="class names must be 'disk', 'indeterminate' or 'bulge'"):
        classes_from_names(["disk", "elliptical"])
    with pytest.raises(ValueError, match="counts must be a 3 x 3 array of non-negative integers"):
        summary_metrics(np.ones((2, 3), dtype=int))
    with pytest.raises(ValueError, match="counts must be a 3 x 3 array"):
        format_handbook_table(np.full((3, 3), 0.5))
