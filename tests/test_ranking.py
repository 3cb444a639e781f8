"""Ranking objectives: pairs only within a task, weighted by their gap; minibatches of whole tasks."""
import numpy as np
import pytest
import torch

from narformer_tvm.learn.ranking import pairwise_rank_loss, task_batches, within_task_kendall


def test_the_loss_orders_pairs_within_a_task_and_ignores_pairs_across_tasks():
    target = torch.tensor([1.0, 0.5, 0.0, 1.0, 0.2])
    groups = torch.tensor([0, 0, 0, 1, 1])
    right = torch.tensor([3.0, 2.0, 1.0, -5.0, -6.0])  # each task in order; task 1 far below task 0
    wrong = torch.tensor([1.0, 2.0, 3.0, -6.0, -5.0])
    assert pairwise_rank_loss(right, target, groups) < 0.25 < pairwise_rank_loss(wrong, target, groups)
    # the offset between tasks is free: shifting one task's scores changes nothing
    shifted = right + torch.tensor([0.0, 0.0, 0.0, 100.0, 100.0])
    assert pairwise_rank_loss(shifted, target, groups) == pytest.approx(float(pairwise_rank_loss(right, target, groups)))


def test_a_wide_gap_weighs_more_than_a_narrow_one():
    groups = torch.zeros(3, dtype=torch.long)
    target = torch.tensor([1.0, 0.95, 0.0])
    swap_near = torch.tensor([1.0, 2.0, 0.0])  # the two near-equal schedules swapped
    swap_far = torch.tensor([0.0, 2.0, 1.0])  # the best ranked below a failure
    assert pairwise_rank_loss(swap_near, target, groups) < pairwise_rank_loss(swap_far, target, groups)


def test_no_pair_gives_zero_with_a_gradient():
    scores = torch.tensor([0.3, 0.7], requires_grad=True)
    loss = pairwise_rank_loss(scores, torch.tensor([1.0, 1.0]), torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() == 0.0 and scores.grad is not None


def test_batches_hold_whole_tasks_and_always_the_focus_task():
    rng = np.random.default_rng(0)
    sizes = [50, 1, 30, 20]
    groups = np.repeat(np.arange(4), sizes)
    for _ in range(20):
        idx = task_batches(sizes, batch_size=16, tasks_per_batch=2, rng=rng, focus=[3])
        tasks, counts = np.unique(groups[idx], return_counts=True)
        assert 3 in tasks and len(tasks) == 2 and 1 not in tasks  # a one-row task has no pair
        assert (counts >= 2).all() and len(set(idx)) == len(idx)


def test_within_task_kendall():
    groups = np.array([0, 0, 0, 1, 1, 1])
    target = np.array([1.0, 0.5, 0.1, 1.0, 0.5, 0.1])
    assert within_task_kendall(-np.arange(6.0), target, groups) == pytest.approx(1.0)
    assert within_task_kendall(np.array([1.0, 2, 3, -3, -2, -1]), target, groups) == pytest.approx(-1.0)
