"""Prediction against values worked out by hand from the equations (design note section 1)."""

from __future__ import annotations

import numpy as np
import pytest

from igniter_opt.perfmodel import PerformanceModel


def test_solo_prediction_by_hand(synthetic_model: PerformanceModel) -> None:
    # small, batch 1, 50 %: k_act = (10 + 20) / 50 + 0.5 = 1.1 ms; power 50 + 0.05*909.09 + 20 < 300,
    # so no clock drop; alone, so no scheduling delay and no cache term.
    lat, thr = synthetic_model.solo("small", 1, 50.0)
    t_gpu = 0.05 + 1.1
    assert lat == pytest.approx(600_000 / 1e7 + t_gpu + 4_000 / 1e7, rel=1e-12)  # 1.2104 ms
    assert lat == pytest.approx(1.2104, rel=1e-12)
    assert thr == pytest.approx(1000 / (t_gpu + 0.0004), rel=1e-12)


def test_pair_with_clock_drop_by_hand(synthetic_model: PerformanceModel) -> None:
    (lat_b, thr_b), (lat_s, thr_s) = synthetic_model.predict_gpu([("big", 8, 60.0), ("small", 4, 40.0)])
    k_b = (100 * 8 + 50) / 60 + 1.0          # 15.1667 ms
    k_s = (10 * 4 + 20) / 40 + 0.5           # 2.0 ms
    h_b, h_s = 8000 / k_b, 4000 / k_s
    c_b, c_s = 0.04 * h_b + 3.0, 0.01 * h_s + 2.0
    power = 50 + (0.5 * h_b + 5.0) + (0.05 * h_s + 20.0)
    assert power > 300  # the pair throttles
    clock = 1500 + -1.0 * (power - 300)
    d = 0.005 * 2 - 0.01
    t_gpu_b = (30 * d + 0.04 + k_b * (1 + 0.002 * c_s)) / (clock / 1500)
    t_gpu_s = (20 * d + 0.05 + k_s * (1 + 0.002 * c_b)) / (clock / 1500)
    assert lat_b == pytest.approx(8 * 0.06 + t_gpu_b + 8 * 0.0004, rel=1e-12)
    assert lat_s == pytest.approx(4 * 0.06 + t_gpu_s + 4 * 0.0004, rel=1e-12)
    assert thr_b == pytest.approx(8000 / (t_gpu_b + 8 * 0.0004), rel=1e-12)
    assert thr_s == pytest.approx(4000 / (t_gpu_s + 4 * 0.0004), rel=1e-12)


def test_interference_only_slows_down(any_model: PerformanceModel) -> None:
    v100_model = any_model
    alone = v100_model.solo("resnet50", 4, 32.5)[0]
    shared = v100_model.predict_gpu([("resnet50", 4, 32.5), ("vgg19", 3, 60.0)])[0][0]
    assert shared > alone


def test_padded_prediction_matches_per_gpu(any_model: PerformanceModel) -> None:
    """The vectorised path gives exactly the per-GPU answers; empty slots are NaN."""
    v100_model = any_model
    sets = [[("vgg19", 6, 75.0), ("resnet50", 4, 15.0)], [("ssd", 8, 92.5)],
            [("resnet50", 9, 45.0), ("alexnet", 6, 20.0), ("ssd", 1, 15.0)]]
    width = max(map(len, sets))
    idx = np.zeros((3, width), int)
    b = np.ones((3, width))
    r = np.full((3, width), 10.0)
    mask = np.zeros((3, width), bool)
    for i, s in enumerate(sets):
        for j, (m, bb, rr) in enumerate(s):
            idx[i, j], b[i, j], r[i, j], mask[i, j] = v100_model.model_index(m), bb, rr, True
    lat, thr = v100_model.predict_padded(idx, b, r, mask)
    for i, s in enumerate(sets):
        for j, (want_lat, want_thr) in enumerate(v100_model.predict_gpu(s)):
            assert lat[i, j] == want_lat and thr[i, j] == want_thr
    assert np.isnan(lat[1, 1:]).all() and np.isnan(thr[0, 2])


def test_paper_plan_predictions(v100_model: PerformanceModel) -> None:
    """GPU 2 of the paper's plan (VGG-19 b3 60 % + ResNet-50 b4 32.5 %) meets both SLO/2."""
    (l7, t7), (l4, t4) = v100_model.predict_gpu([("vgg19", 3, 60.0), ("resnet50", 4, 32.5)])
    assert l7 == pytest.approx(9.97, abs=0.01) and l7 <= 10.0
    assert l4 == pytest.approx(9.69, abs=0.01) and l4 <= 10.0
    assert t7 >= 300 and t4 >= 400
