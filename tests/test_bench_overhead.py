"""benchmarks/overhead.py: the direct ratio of a paired (loop run, bare calls) measurement."""
from __future__ import annotations

import pytest

from benchmarks.overhead import paired_ratios


def test_paired_ratio_is_time_per_nfe_over_the_mean_of_its_own_bare_calls():
    # pair 1: 3 NFE in 0.33 s = 0.11 s/NFE over calls of mean 0.1 s -> 1.1;
    # pair 2: 0.27 s / 3 = 0.09 s/NFE over mean(0.05, 0.10, 0.15) = 0.1 s -> 0.9
    ratios = paired_ratios([0.33, 0.27], 3, [[0.1, 0.1, 0.1], [0.05, 0.10, 0.15]])
    assert ratios == pytest.approx([1.1, 0.9], rel=1e-12)


def test_each_pair_is_divided_by_its_own_calls_not_the_pooled_mean():
    # the same loop time against a slow and a fast stretch of bare calls
    ratios = paired_ratios([0.4, 0.4], 2, [[0.4, 0.4], [0.1, 0.1]])
    assert ratios == pytest.approx([0.5, 2.0], rel=1e-12)


def test_pairs_must_match():
    with pytest.raises(ValueError, match=r"bare_s has 1 .*loop_s has 2"):
        paired_ratios([0.1, 0.2], 1, [[0.1]])
