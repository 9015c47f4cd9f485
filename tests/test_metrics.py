import math

import numpy as np
import pytest

from clcore.metrics import summarize


def test_spec_matrix():
    nan = math.nan
    acc = np.array([[90, 15, nan], [60, 80, 13], [50, 82, 85]], dtype=float)
    s = summarize(acc, np.array([10, 12, 11.0]))
    assert s["faa"] == pytest.approx(72.3333, abs=1e-3)
    assert s["bwt"] == pytest.approx(-19)
    assert s["forgetting"] == pytest.approx(19)
    assert s["forgetting_mammoth"] == pytest.approx(20)
    assert s["fwt"] == pytest.approx(2.5)
    assert s["aia"] == pytest.approx((90 + 70 + 72.3333) / 3, abs=1e-3)


def test_single_task_and_missing_probe_are_nan():
    s = summarize(np.array([[70.0]]))
    assert s["faa"] == 70 and math.isnan(s["forgetting"]) and math.isnan(s["bwt"]) and math.isnan(s["fwt"])
    assert math.isnan(summarize(np.eye(3) * 100)["fwt"])
