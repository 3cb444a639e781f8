import os
from pathlib import Path

import pytest

from narformer_tvm.data.store import Store
from narformer_tvm.measure.backends import MeasureConfig
from narformer_tvm.measure.exporter import Exporter
from narformer_tvm.measure.profiler import Job, sweep
from narformer_tvm.measure.zoo import variants


@pytest.fixture
def exporter():
    e = Exporter()
    yield e
    e.close()


def test_variants_are_exported_in_another_process_and_only_the_last_is_kept(exporter):
    a, b = (v.to_dict() for v in variants("squeezenet", 0, 2))
    first, failure = exporter.export(a, timeout=120)
    assert failure is None and Path(first).stat().st_size > 0
    assert exporter.worker.proc.pid != os.getpid()  # torch's export ran elsewhere than the caller
    assert exporter.export(a, timeout=120) == (first, None)  # the same model again: the same file
    second, _ = exporter.export(b, timeout=120)
    assert second != first and not Path(first).exists() and Path(second).exists()
    path, failure = exporter.export({**a, "family": "no-such-family"}, timeout=120)
    assert path is None and failure["measurement"]["error"].startswith("export failed")


def test_a_failed_export_is_a_failed_row_and_the_sweep_goes_on(tmp_path):
    good = next(iter(variants("squeezenet", 0, 1)))
    jobs = [Job(key="broken", name="broken", family="squeezenet", variant={**good.to_dict(), "family": "no-such-family"}),
            Job(key=good.key, name=good.name, family=good.family, variant=good.to_dict())]
    with Store(tmp_path / "d.db") as store:
        summary = sweep(jobs, store, MeasureConfig(warmup_s=0.01, blocks=3, min_runs=2, max_runs=3, min_block_s=0.001),
                        reference_every=0)
        errors = dict(store.db.execute("SELECT d.key, m.error FROM measurements m JOIN models d ON d.id = m.model_id"))
    assert summary.failed == 1 and summary.measured == 1
    assert errors["broken"].startswith("export failed") and errors[good.key] is None
