import os

import pytest

from narformer_tvm.learn.side_by_side import available_cores, run_side_by_side


def _square(x: int, progress=None) -> tuple[int, int, int]:
    """x squared, this process's id and its torch threads, after two progress lines."""
    import torch

    for step in (1, 2):
        if progress:
            progress(f"epoch {step}/2 of {x}")
    return x * x, os.getpid(), torch.get_num_threads()


def _fail(x: int, progress=None):
    raise ValueError(f"bad input {x}")


def test_calls_run_in_worker_processes_with_one_thread_each_and_report_progress():
    heard = []
    out = run_side_by_side([(_square, (x,), {}) for x in (2, 3, 4)], processes=2,
                           progress=lambda i, line: heard.append((i, line)))
    assert [o[0] for o in out] == [4, 9, 16]  # in the order of the calls
    assert all(pid != os.getpid() for _, pid, _ in out) and all(t == 1 for *_, t in out)
    for i, x in enumerate((2, 3, 4)):
        assert [line for j, line in heard if j == i] == [f"epoch 1/2 of {x}", f"epoch 2/2 of {x}", None]


def test_one_process_runs_the_calls_here():
    heard = []
    out = run_side_by_side([(_square, (5,), {}), (_square, (6,), {})], processes=1,
                           progress=lambda i, line: heard.append((i, line)))
    assert [o[0] for o in out] == [25, 36] and {pid for _, pid, _ in out} == {os.getpid()}
    assert heard[-1] == (1, None) and len(heard) == 6
    assert available_cores() >= 1


def test_a_failing_call_raises_its_error_in_the_caller():
    with pytest.raises(ValueError, match="bad input 7"):
        run_side_by_side([(_square, (1,), {}), (_fail, (7,), {})], processes=2)
