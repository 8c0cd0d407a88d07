"""A reference that fails on a structure to be labelled: the error names the call and keeps
the structure; the run called again with a working reference makes that call and goes on. A
run whose folder was moved resumes with the models it wrote, from the new folder."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read
from test_learning_rigidity import FAST, model_file, start

from ase_equi.errors import ReferenceFailed
from ase_equi.learning import learn_on_the_fly

__all__ = ["model_file"]  # the fixture, shared with test_learning_rigidity


class FailingEMT(EMT):
    """EMT whose SCF, as it were, does not converge."""

    def calculate(self, *args, **kwargs):
        raise RuntimeError("SCF did not converge")


def test_a_failing_reference_is_named_and_the_run_resumes_with_another(model_file, tmp_path):
    options = dict(steps=6, threshold=1e-6, max_calls=1, min_interval=3, replay=None,
                   train_config=FAST)  # fmt: skip
    with pytest.raises(ReferenceFailed, match=r"FailingEMT failed on the structure of call 1 "
                       r"\(.*failed-0\.xyz\): RuntimeError: SCF did not converge"):  # fmt: skip
        learn_on_the_fly(start(), model_file, FailingEMT(), out=tmp_path / "run", **options)
    kept = read(tmp_path / "run" / "failed-0.xyz")
    whole = learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "whole", **options)
    resumed = learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "run", **options)
    assert [c["step"] for c in resumed.calls] == [c["step"] for c in whole.calls]
    learned = read(tmp_path / "run" / "learned.xyz")
    np.testing.assert_allclose(kept.positions, learned.positions, rtol=0, atol=1e-7)
    assert resumed.calls[0]["force_rmse_before"] == pytest.approx(
        whole.calls[0]["force_rmse_before"], rel=1e-9
    )


def test_a_moved_run_folder_resumes_with_its_own_models(model_file, tmp_path):
    """Two calls in 4 steps, the folder moved, 2 more steps: the third call trains from the
    moved folder's model-2 (the old folder is gone) and equals a run never moved."""
    options = dict(every=2, replay=None, train_config=FAST)
    whole = learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "whole", steps=6, **options)
    learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "a", steps=4, **options)
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "b", steps=6, **options)
    assert moved.model == tmp_path / "b" / "model-3.json" and not (tmp_path / "a").exists()
    keys = ("step", "force_rmse_before", "force_rmse_after")
    got = np.array([[c[k] for k in keys] for c in moved.calls])
    np.testing.assert_allclose(got, [[c[k] for k in keys] for c in whole.calls], rtol=1e-9)
