"""Handbook classes (SPEC §5): every boundary of every threshold set, on both sides."""

import subprocess
import sys

import numpy as np
import pytest

from gamornet.science.classify import HANDBOOK_THRESHOLDS, Thresholds, classify, default_threshold_set, resolve_thresholds

DTYPES = (np.float32, np.float64)


def below(value, dtype):
    """The largest number of ``dtype`` below ``value`` (as ``dtype``)."""
    return np.nextafter(dtype(value), dtype(0))


def above(value, dtype):
    return np.nextafter(dtype(value), dtype(1))


def row(p_disk, p_indet, p_bulge, dtype):
    return np.array([[p_disk, p_indet, p_bulge]], dtype=dtype)


def one(p_disk, p_indet, p_bulge, dtype, thresholds):
    return classify(row(p_disk, p_indet, p_bulge, dtype), thresholds)[0]


# --------------------------------------------------------------------------- SDSS sets: p >= t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, threshold", [("keras_SDSS", 0.70), ("tflearn_SDSS", 0.80)])
def test_sdss_sets_are_inclusive_at_their_threshold(name, threshold, dtype):
    rest = (1 - threshold) / 2
    assert one(threshold, rest, rest, dtype, name) == "disk"
    assert one(below(threshold, dtype), rest, rest, dtype, name) == "indeterminate"
    assert one(rest, rest, threshold, dtype, name) == "bulge"
    assert one(rest, rest, below(threshold, dtype), dtype, name) == "indeterminate"
    # The indeterminate probability never makes a class by itself.
    assert one(rest, threshold, rest, dtype, name) == "indeterminate"


def test_sdss_sets_differ_between_flavours():
    probabilities = np.array([[0.75, 0.15, 0.10], [0.10, 0.15, 0.75], [0.85, 0.1, 0.05]])
    assert classify(probabilities, "keras_SDSS").tolist() == ["disk", "bulge", "disk"]
    assert classify(probabilities, "tflearn_SDSS").tolist() == ["indeterminate", "indeterminate", "disk"]


# --------------------------------------------------------------------------- CANDELS sets: strict '>' for disks


@pytest.mark.parametrize("dtype", DTYPES)
def test_keras_candels_disk_must_strictly_lead_both_other_probabilities(dtype):
    name = "keras_CANDELS"
    # A tie with p_bulge or with p_indet is not a disk; one step above is.
    assert one(0.4, 0.2, 0.4, dtype, name) == "indeterminate"
    assert one(above(0.4, dtype), 0.2, 0.4, dtype, name) == "disk"
    assert one(0.4, 0.4, 0.2, dtype, name) == "indeterminate"
    assert one(above(0.4, dtype), 0.4, 0.2, dtype, name) == "disk"
    # No minimum p_disk: a narrow lead is enough.
    assert one(0.34, 0.33, 0.33, dtype, name) == "disk"
    assert one(1.0, 0.0, 0.0, dtype, name) == "disk"


@pytest.mark.parametrize("dtype", DTYPES)
def test_keras_candels_bulge_is_inclusive_at_060(dtype):
    name = "keras_CANDELS"
    assert one(0.2, 0.2, 0.6, dtype, name) == "bulge"
    assert one(0.2, 0.2, below(0.6, dtype), dtype, name) == "indeterminate"
    # The most probable class being the bulge is not enough below 0.60.
    assert one(0.2, 0.21, 0.59, dtype, name) == "indeterminate"


@pytest.mark.parametrize("dtype", DTYPES)
def test_tflearn_candels_disk_needs_a_strict_lead_and_036(dtype):
    name = "tflearn_CANDELS"
    assert one(0.36, 0.32, 0.32, dtype, name) == "disk"
    assert one(below(0.36, dtype), 0.32, 0.32, dtype, name) == "indeterminate"
    # Ties at or above 0.36 are not disks; one step above is.
    assert one(0.4, 0.2, 0.4, dtype, name) == "indeterminate"
    assert one(above(0.4, dtype), 0.2, 0.4, dtype, name) == "disk"
    assert one(0.4, 0.4, 0.2, dtype, name) == "indeterminate"
    assert one(above(0.4, dtype), 0.4, 0.2, dtype, name) == "disk"
    # Exactly at 0.36 and tied with p_indet: not a disk.
    assert one(0.36, 0.36, 0.28, dtype, name) == "indeterminate"


@pytest.mark.parametrize("dtype", DTYPES)
def test_tflearn_candels_bulge_is_inclusive_at_055(dtype):
    name = "tflearn_CANDELS"
    assert one(0.2, 0.25, 0.55, dtype, name) == "bulge"
    assert one(0.2, 0.25, below(0.55, dtype), dtype, name) == "indeterminate"


def test_candels_sets_differ_between_flavours():
    probabilities = np.array([[0.35, 0.33, 0.32], [0.2, 0.22, 0.58]])
    assert classify(probabilities, "keras_CANDELS").tolist() == ["disk", "indeterminate"]
    assert classify(probabilities, "tflearn_CANDELS").tolist() == ["indeterminate", "bulge"]


# --------------------------------------------------------------------------- user thresholds and shapes


def test_user_thresholds_as_pair_triple_and_object():
    probabilities = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.5, 0.3, 0.2]])
    assert classify(probabilities, (0.6, 0.6)).tolist() == ["disk", "bulge", "indeterminate"]
    assert classify(probabilities, [0.5, 0.6, True]).tolist() == ["disk", "bulge", "disk"]
    assert classify(probabilities, Thresholds(0.7, 0.5)).tolist() == ["indeterminate", "bulge", "indeterminate"]


def test_overlapping_user_thresholds_pick_the_larger_probability_and_a_tie_is_indeterminate():
    probabilities = np.array([[0.45, 0.2, 0.35], [0.35, 0.2, 0.45], [0.4, 0.2, 0.4]])
    assert classify(probabilities, (0.3, 0.3)).tolist() == ["disk", "bulge", "indeterminate"]


def test_a_single_row_gives_a_single_class_and_lists_are_accepted():
    assert classify([0.1, 0.1, 0.8], "tflearn_SDSS") == "bulge"
    assert classify([[0.8, 0.1, 0.1]], "tflearn_SDSS").tolist() == ["disk"]
    assert classify(np.empty((0, 3)), "keras_SDSS").shape == (0,)


def test_handbook_sets_match_spec():
    assert HANDBOOK_THRESHOLDS["keras_SDSS"] == Thresholds(0.70, 0.70, False)
    assert HANDBOOK_THRESHOLDS["keras_CANDELS"] == Thresholds(0.0, 0.60, True)
    assert HANDBOOK_THRESHOLDS["tflearn_SDSS"] == Thresholds(0.80, 0.80, False)
    assert HANDBOOK_THRESHOLDS["tflearn_CANDELS"] == Thresholds(0.36, 0.55, True)
    assert resolve_thresholds("keras_CANDELS") is HANDBOOK_THRESHOLDS["keras_CANDELS"]


def test_default_threshold_set():
    assert default_threshold_set("keras", "SDSS") == "keras_SDSS"
    assert default_threshold_set("tflearn", "CANDELS") == "tflearn_CANDELS"
    with pytest.raises(ValueError, match="backend must be 'keras' or 'tflearn'. Received: backend='torch'"):
        default_threshold_set("torch", "SDSS")
    with pytest.raises(ValueError, match="'SDSS' and 'CANDELS' data sets only. Received: 'HST'"):
        default_threshold_set("keras", "HST")


def test_classify_is_backend_neutral():
    code = "import sys, gamornet.science.classify; sys.exit(bool({'tensorflow', 'keras', 'tflearn'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "thresholds, error, match",
    [
        ("keras_HST", ValueError, r"thresholds must be 'keras_SDSS', .* Received: thresholds='keras_HST'"),
        ((0.7, 1.2), ValueError, r"the bulge threshold must be a probability between 0 and 1. Received: 1.2"),
        ((-0.1, 0.5), ValueError, r"the disk threshold must be a probability between 0 and 1. Received: -0.1"),
        (("0.7", 0.7), ValueError, r"the disk threshold must be a probability .* Received: '0.7'"),
        ((0.7, 0.7, "yes"), TypeError, r"disk_must_lead must be True or False. Received: 'yes'"),
        (0.7, TypeError, r"thresholds must be .* Received: 0.7"),
        ((0.1, 0.2, True, 4), TypeError, r"thresholds must be .*Received: \(0.1, 0.2, True, 4\)"),
    ],
)
def test_bad_thresholds(thresholds, error, match):
    with pytest.raises(error, match=match):
        classify(np.array([[0.2, 0.3, 0.5]]), thresholds)


@pytest.mark.parametrize(
    "probabilities, error, match",
    [
        (np.ones((2, 4)) / 4, ValueError, r"shape \(n, 3\) or \(3,\).*Received an array of shape \(2, 4\)"),
        (np.ones((1, 1, 3)) / 3, ValueError, r"Received an array of shape \(1, 1, 3\)"),
        (np.array([[0.5, 0.6, 0.2]]), ValueError, r"must sum to 1. Received row 0: \[0.5, 0.6"),
        (np.array([[0.5, 0.5, 0.0], [np.nan, 0.5, 0.5]]), ValueError, r"Received row 1: \[nan, 0.5, 0.5\]"),
        (np.array([[1.2, -0.2, 0.0]]), ValueError, r"between 0 and 1.*Received row 0"),
        (np.array([["a", "b", "c"]]), TypeError, r"probabilities must be real numbers. Received dtype <U1"),
    ],
)
def test_bad_probabilities(probabilities, error, match):
    with pytest.raises(error, match=match):
        classify(probabilities, "keras_SDSS")


# --------------------------------------------------------------------------- near_boundaries


def _reference_class(p_disk, p_indet, p_bulge, disk, bulge, lead):
    """The class rule written out from the handbook's table, one galaxy at a time (independent of classify)."""
    is_disk = p_disk >= disk and (not lead or (p_disk > p_bulge and p_disk > p_indet))
    is_bulge = p_bulge >= bulge
    if is_disk and is_bulge:
        return "disk" if p_disk > p_bulge else "bulge" if p_bulge > p_disk else "indeterminate"
    return "disk" if is_disk else "bulge" if is_bulge else "indeterminate"


_RULES = {"keras_SDSS": (0.70, 0.70, False), "keras_CANDELS": (0.0, 0.60, True), "tflearn_SDSS": (0.80, 0.80, False),
          "tflearn_CANDELS": (0.36, 0.55, True), (0.4, 0.45): (0.4, 0.45, False)}  # fmt: skip


@pytest.mark.parametrize("rule", list(_RULES), ids=str)
def test_galaxies_not_flagged_keep_their_class_when_their_probabilities_move_less_than_the_margin(rule):
    from gamornet.science.classify import near_boundaries

    rng = np.random.default_rng(7)
    probabilities = rng.dirichlet([0.6, 0.3, 0.6], size=4000)
    # Galaxies placed on and next to every boundary, where a rounding could change their class.
    edges = np.array([[0.70, 0.10, 0.20], [0.69, 0.01, 0.30], [0.45, 0.10, 0.45], [0.30, 0.10, 0.60],
                      [0.36, 0.34, 0.30], [0.40, 0.15, 0.45], [0.80, 0.0, 0.20], [0.2, 0.0, 0.8]])  # fmt: skip
    probabilities = np.concatenate([probabilities, edges])
    margin = 0.02
    flagged = near_boundaries(probabilities, rule, margin)
    disk, bulge, lead = _RULES[rule]
    moves = rng.uniform(-margin, margin, size=(200, 3)) * 0.999
    corners = np.array(np.meshgrid(*[[-0.999 * margin, 0.999 * margin]] * 3)).reshape(3, -1).T
    changed = np.zeros(len(probabilities), dtype=bool)
    for row, values in enumerate(probabilities):
        before = _reference_class(*values, disk, bulge, lead)
        changed[row] = any(_reference_class(*(values + move), disk, bulge, lead) != before
                           for move in np.concatenate([moves, corners]))  # fmt: skip
    assert not (changed & ~flagged).any()  # every galaxy that can change class is flagged
    assert changed.sum() > 10  # the test does reach the boundaries
    assert flagged.mean() < 0.25  # and the flag is not everything


def test_near_boundaries_of_the_most_probable_class_and_of_several_rules():
    from gamornet.science.classify import MOST_PROBABLE, near_boundaries

    probabilities = np.array([[0.50, 0.02, 0.48], [0.60, 0.10, 0.30], [0.34, 0.33, 0.33], [0.71, 0.0, 0.29],
                              [0.05, 0.0, 0.95]])  # fmt: skip
    assert near_boundaries(probabilities, MOST_PROBABLE, 0.02).tolist() == [True, False, True, False, False]
    assert near_boundaries(probabilities, "keras_SDSS", 0.02).tolist() == [False, False, False, True, False]
    assert near_boundaries(probabilities, [MOST_PROBABLE, "keras_SDSS"], 0.02).tolist() == [
        True, False, True, True, False]
    # keras_CANDELS' disk threshold of 0 is met by every probability: a small p_disk is not near it.
    assert not near_boundaries(probabilities[4:], "keras_CANDELS", 0.02).any()
    # A wider margin flags more.
    assert near_boundaries(probabilities, "keras_SDSS", 0.1).tolist() == [False, True, False, True, False]


@pytest.mark.parametrize("rules, margin, error, match", [
    ("keras_HST", 0.02, ValueError, "thresholds must be"),
    ([], 0.02, TypeError, "a non-empty list of them"),
    (None, 0.02, TypeError, "Received: None"),
    ("keras_SDSS", 0.0, ValueError, r"margin must be a probability in \(0, 0.5\). Received: margin=0.0"),
    ("keras_SDSS", 0.5, ValueError, "Received: margin=0.5"),
    ("keras_SDSS", True, ValueError, "Received: margin=True"),
    ("keras_SDSS", "0.1", ValueError, "Received: margin='0.1'"),
])  # fmt: skip
def test_near_boundaries_bad_input(rules, margin, error, match):
    from gamornet.science.classify import near_boundaries

    with pytest.raises(error, match=match):
        near_boundaries(np.array([[0.5, 0.2, 0.3]]), rules, margin)
    with pytest.raises(ValueError, match="must sum to 1"):
        near_boundaries(np.array([[0.5, 0.5, 0.3]]), "keras_SDSS", 0.02)
