"""Allocation: exact sum, >= 1 per group when the budget allows, <= group size, monotone, documented policies."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy3d.tokenizer.allocation import allocate

sizes_st = st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(sizes=sizes_st, budget=st.integers(min_value=0, max_value=3000), m=st.integers(min_value=0, max_value=4))
def test_allocation_sum_is_exact_and_bounded(sizes: list[int], budget: int, m: int) -> None:
    n = np.array(sizes)
    k = allocate(n, budget, m)
    assert k.sum() == min(budget, n.sum())
    assert (k >= 0).all() and (k <= n).all()


@settings(max_examples=150, deadline=None)
@given(sizes=sizes_st, budget=st.integers(min_value=0, max_value=3000))
def test_every_group_gets_a_proxy_when_budget_allows(sizes: list[int], budget: int) -> None:
    n = np.array(sizes)
    k = allocate(n, budget, 1)
    if budget >= n.size:
        assert (k >= 1).all()
    else:  # more groups than budget: exactly `budget` groups get one each, the largest first
        assert (k <= 1).all() and k.sum() == budget
        assert n[k == 1].min(initial=10**9) >= n[k == 0].max(initial=0)


@settings(max_examples=150, deadline=None)
@given(sizes=sizes_st, budget=st.integers(min_value=0, max_value=3000), cap=st.integers(min_value=0, max_value=8))
def test_allocation_is_monotone_in_group_size(sizes: list[int], budget: int, cap: int) -> None:
    n = np.array(sizes)
    k = allocate(n, budget, 1, caps=np.full(n.size, cap))
    bigger = n[:, None] > n[None, :]
    assert not (bigger & (k[:, None] < k[None, :])).any(), (n, k)  # a larger group never gets fewer


@settings(max_examples=100, deadline=None)
@given(sizes=sizes_st, budget=st.integers(min_value=1, max_value=3000), cap=st.integers(min_value=1, max_value=8))
def test_per_object_cap_is_respected_and_surplus_goes_elsewhere(sizes: list[int], budget: int, cap: int) -> None:
    n = np.array(sizes + [5000])  # last group uncapped (background)
    caps = np.array([cap] * len(sizes) + [0])
    k = allocate(n, budget, 1, caps=caps)
    assert (k[:-1] <= cap).all()
    assert k.sum() == min(budget, n.sum())


def test_allocation_is_proportional() -> None:
    k = allocate(np.array([600, 300, 100]), 100, 1)
    assert k.tolist() == [60, 30, 10]


def test_min_per_group_is_lowered_when_it_does_not_fit() -> None:
    k = allocate(np.array([50, 50, 50, 50]), 6, 5)  # 4 groups x 5 > 6: everyone still gets one
    assert k.sum() == 6 and (k >= 1).all()


def test_unguaranteed_background_groups_get_only_their_share() -> None:
    n = np.array([100, 100] + [2] * 50)  # two objects, 50 sparse background voxels
    guaranteed = np.array([True, True] + [False] * 50)
    k = allocate(n, 20, 1, guaranteed=guaranteed)
    assert k.sum() == 20 and (k[:2] >= 1).all()
    assert k[2:].sum() < 50  # background voxels did not each claim a proxy


def test_more_groups_than_budget_keeps_priority_then_size() -> None:
    n = np.array([5, 50, 10, 40])
    prio = np.array([1, 0, 1, 0])
    k = allocate(n, 3, 1, priority=prio)
    assert k.tolist() == [1, 1, 1, 0]


def test_zero_budget_and_empty_groups() -> None:
    assert allocate(np.array([3, 0, 4]), 0).tolist() == [0, 0, 0]
    assert allocate(np.array([3, 0, 4]), 100).tolist() == [3, 0, 4]
    assert allocate(np.zeros(0, dtype=int), 10).size == 0
