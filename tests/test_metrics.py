import numpy as np
import pytest

from narformer_tvm.learn.metrics import (
    acc_within,
    kendall_tau,
    mape,
    rmspe,
    spearman,
    summary,
)


def test_errors_by_hand():
    pred, true = [11.0, 18.0, 40.0, 100.0], [10.0, 20.0, 40.0, 80.0]
    # relative errors: 0.1, 0.1, 0.0, 0.25
    assert mape(pred, true) == pytest.approx(0.45 / 4)
    assert rmspe(pred, true) == pytest.approx(np.sqrt((0.01 + 0.01 + 0 + 0.0625) / 4))
    assert acc_within(pred, true, 0.10) == 0.75
    assert acc_within(pred, true, 0.05) == 0.25
    assert summary(pred, true)["n"] == 4
    with pytest.raises(ValueError, match="shape"):
        mape([1.0], [1.0, 2.0])


def test_kendall_by_hand():
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # pairs: (1,2)+ (1,3)+ (1,4)+ (2,3)- (2,4)+ (3,4)+ -> (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)


@pytest.mark.parametrize("seed", range(5))
def test_rank_correlations_match_scipy(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 8, 60).astype(float)  # ties included
    y = x + rng.normal(0, 2, 60).round()
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
