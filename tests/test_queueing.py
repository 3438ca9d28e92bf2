"""The per-request latency model (igniter_opt.placement.queueing): simulator, table, planner side, cache."""

from __future__ import annotations

import logging
import math
from decimal import Decimal, getcontext

import numpy as np
import pytest

from igniter_opt.domain import ServingParams
from igniter_opt.errors import InputError
from igniter_opt.placement import queueing as q

SMALL = q.QueueingParams(n_requests=4000)  # tables in a fraction of a second; statistics do not matter here


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets an empty cache folder and an empty memory cache."""
    monkeypatch.setenv("IGNITER_OPT_CACHE", str(tmp_path / "cache"))
    q.clear_memory_cache()
    yield
    q.clear_memory_cache()


def plain_simulation(batch: int, delta: float, sigma: float, arrivals: np.ndarray,
                     mult: np.ndarray) -> np.ndarray:
    """The batcher's rule, one request at a time (the reference for the vectorised simulator)."""
    n = arrivals.size
    latency = np.empty(n)
    free, head = -math.inf, 0
    while head < n:
        fills = arrivals[head + batch - 1] if head + batch - 1 < n else math.inf
        dispatch = max(free, min(arrivals[head] + delta, fills))  # free, and full or the oldest waited delta
        size = 0
        while head + size < n and size < batch and arrivals[head + size] <= dispatch:
            size += 1
        service = sigma * mult[head]
        for j in range(head, head + size):
            latency[j] = dispatch - arrivals[j] + service
        free, head = dispatch + service, head + size
    return latency


# ---------------------------------------------------------------------------------------------
# The simulator


@pytest.mark.parametrize("arrival", ["poisson", "constant"])
@pytest.mark.parametrize(("batch", "delta", "sigma"), [
    (1, 0.0, 0.9), (2, 0.0, 1.5), (3, 1.0, 2.9), (8, 3.5, 7.0), (8, 7.0, 1.0), (5, 0.0, 0.0), (12, 5.5, 10.0),
])
def test_vectorised_simulator_equals_the_plain_event_loop(arrival, batch, delta, sigma) -> None:
    arrivals, mult = q.normalised_stream(3000, arrival, 0.4, seed=7)
    got = q.simulate_stream(batch, np.array([delta, delta]), np.array([sigma, 0.5 * sigma]), arrivals, mult)
    np.testing.assert_allclose(got[0], plain_simulation(batch, delta, sigma, arrivals, mult), atol=1e-9)
    np.testing.assert_allclose(got[1], plain_simulation(batch, delta, 0.5 * sigma, arrivals, mult), atol=1e-9)


@pytest.mark.parametrize(("batch", "delta", "rho"), [(1, 0.0, 0.6), (4, 1.5, 0.3), (6, 5.0, 0.9)])
def test_steady_state_records_each_segment_after_its_own_warm_up(batch, delta, rho) -> None:
    """Segments side by side give exactly what running each segment on its own gives."""
    n, sigma = 5000, rho * batch
    arrivals, mult = q.normalised_stream(q.WARMUP_CAP + n + batch, "poisson", 0.2, seed=3)
    got = q.simulate_normalised(batch, delta, sigma, service_cv=0.2, n_requests=n, seed=3)
    warm = int(q.warmup_requests(np.array([rho]), batch)[0])
    length = n if batch == 1 else max(warm, q.SEGMENT_MIN)
    expected = []
    for rec in range(q.WARMUP_CAP, q.WARMUP_CAP + n, length):
        end = min(rec + length, q.WARMUP_CAP + n)
        # a segment's last batch may take the next segment's first requests: give it a batch more
        span = slice(rec - warm, end + batch)
        lat = plain_simulation(batch, delta, sigma, arrivals[span], mult[span])
        expected.append(lat[warm:warm + end - rec])
    np.testing.assert_allclose(got, np.concatenate(expected), atol=1e-9)


def test_constant_arrivals_give_the_latencies_worked_out_by_hand() -> None:
    arrivals, mult = q.normalised_stream(24, "constant")
    # b 4, delay = fill time 3, S 1: batches {0..3} sent at 3, {4..7} at 7, ...: latencies 4, 3, 2, 1
    lat = q.simulate_stream(4, np.array([3.0]), np.array([1.0]), arrivals, mult)[0]
    np.testing.assert_allclose(lat, np.tile([4.0, 3.0, 2.0, 1.0], 6))
    # b 4, delay 1.5, S 1: the delay ends before the batch fills: {0, 1} at 1.5 (free at 2.5), {2, 3} at 3.5
    lat = q.simulate_stream(4, np.array([1.5]), np.array([1.0]), arrivals, mult)[0]
    np.testing.assert_allclose(lat, np.tile([2.5, 1.5], 12))
    # b 2, no delay, S 1.5: {0} at 0, {1} at 1.5, {2, 3} at 3, {4} at 4.5, {5, 6} at 6, {7} at 7.5, ...
    lat = q.simulate_stream(2, np.array([0.0]), np.array([1.5]), arrivals, mult)[0]
    np.testing.assert_allclose(lat[:4], [1.5, 2.0, 2.5, 1.5])
    np.testing.assert_allclose(lat[4:22], np.tile([2.0, 2.5, 1.5], 6))


def md1_waiting_cdf(t: float, rho: float) -> float:
    """P(wait <= t) of M/D/1 with service time 1 and arrival rate rho (Erlang, 1909).

    (1 - rho) sum_{k <= t} (rho (k - t))^k / k! exp(rho (t - k)); the alternating terms cancel
    catastrophically in floats, so they are summed with 60 decimal digits.
    """
    getcontext().prec = 60
    r, tt = Decimal(repr(rho)), Decimal(repr(t))
    total = sum((r * (k - tt)) ** k / math.factorial(k) * (r * (tt - k)).exp() for k in range(int(t) + 1))
    return float((1 - r) * total)


def md1_latency_quantile(level: float, rho: float) -> float:
    """Normalised latency quantile of M/D/1 (time unit 1/R, service sigma = rho): rho (wait quantile + 1)."""
    if level <= 1 - rho:
        return rho
    lo, hi = 0.0, 1.0
    while md1_waiting_cdf(hi, rho) < level:
        hi *= 2
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if md1_waiting_cdf(mid, rho) < level else (lo, mid)
    return rho * (hi + 1.0)


@pytest.mark.parametrize(("rho", "rel_tol"), [(0.5, (0.01, 0.02, 0.03)), (0.8, (0.02, 0.03, 0.06))])
def test_batch_of_one_is_md1(rho, rel_tol) -> None:
    """At b = 1 the server is M/D/1: Erlang's waiting-time distribution and the Pollaczek-Khinchine mean."""
    levels = np.array([0.5, 0.9, 0.99])
    lat = q.simulate_normalised(1, 0.0, rho, n_requests=400_000, seed=11)
    got = np.quantile(lat, levels)
    exact = np.array([md1_latency_quantile(p, rho) for p in levels])
    assert np.all(np.abs(got / exact - 1) <= np.array(rel_tol)), (got, exact)
    pk_mean = rho + rho * rho / (2 * (1 - rho))  # service + Pollaczek-Khinchine mean wait (time unit 1/R)
    assert lat.mean() == pytest.approx(pk_mean, rel=0.02)


def test_gamma_service_variance_gives_the_mg1_mean() -> None:
    rho, cv = 0.7, 0.5
    lat = q.simulate_normalised(1, 0.0, rho, service_cv=cv, n_requests=400_000, seed=5)
    pk_mean = rho + rho * rho * (1 + cv**2) / (2 * (1 - rho))  # E[W] = lambda E[S^2] / (2 (1 - rho))
    assert lat.mean() == pytest.approx(pk_mean, rel=0.02)


def test_common_random_numbers_make_latency_smooth_and_monotone_in_sigma() -> None:
    sigma = np.linspace(0.5, 3.5, 13)
    quant = q.simulate_normalised(4, 1.5, sigma, n_requests=20_000, levels=(0.5, 0.9, 0.99))
    assert np.all(np.diff(quant, axis=0) > 0)


def test_simulator_rejects_an_unstable_scenario() -> None:
    with pytest.raises(InputError, match="^sigma must be below batch"):
        q.simulate_normalised(4, 0.0, 4.0, n_requests=2000)


# ---------------------------------------------------------------------------------------------
# The table


def test_table_equals_a_direct_simulation_at_its_grid_points() -> None:
    batch = 5
    table = q.latency_table(batch, SMALL)
    assert table.quantiles.shape == (len(q.DELAY_FRACTIONS), len(q.RHO_GRID), len(q.LEVELS))
    for i, delta in enumerate(q.delay_grid(batch)):
        direct = q.simulate_normalised(batch, delta, q.sigma_grid(batch), n_requests=SMALL.n_requests,
                                       levels=q.LEVELS)
        monotone = np.maximum.accumulate(np.maximum.accumulate(direct, axis=0), axis=1)
        np.testing.assert_array_equal(table.quantiles[i], monotone)
        # the running maximum barely moves it (below the sample's maximum, level 1)
        np.testing.assert_allclose(table.quantiles[i, :, :-1], direct[:, :-1], atol=0.05 * batch)
    assert np.all(np.diff(table.quantiles, axis=1) >= 0) and np.all(np.diff(table.quantiles, axis=2) >= 0)


def test_request_latency_reads_the_table_at_grid_points_and_interpolates_between() -> None:
    batch, rate = 5, 400.0
    table = q.latency_table(batch, SMALL)
    i50, i99 = table.level_index(0.5), table.level_index(0.99)
    params = q.QueueingParams(client_ms=1.5, n_requests=SMALL.n_requests)
    delay_ms = 1000.0 * table.delta[2] / rate
    service_ms = 1000.0 * table.sigma[10:12] / rate
    p50, p99, _ = q.request_latency(rate, batch, delay_ms, service_ms, 100.0, params)
    np.testing.assert_allclose(p50, 1.5 + 1000.0 * table.quantiles[2, 10:12, i50] / rate)
    np.testing.assert_allclose(p99, 1.5 + 1000.0 * table.quantiles[2, 10:12, i99] / rate)
    # halfway in sigma and in delta: the mean of the four corners
    mid_delay = 1000.0 * table.delta[2:4].mean() / rate
    p50, _, _ = q.request_latency(rate, batch, mid_delay, service_ms.mean(), 100.0, params)
    corners = table.quantiles[2:4, 10:12, i50].mean()
    assert p50[()] == pytest.approx(1.5 + 1000.0 * corners / rate)


def test_scale_invariance_doubling_the_rate_halves_latency() -> None:
    """Twice the rate with half the delay and service time: the same normalised system, half the latency."""
    params = q.QueueingParams(client_ms=2.0, n_requests=SMALL.n_requests)
    rate, batch, delay = 300.0, np.array([1, 4, 6]), np.array([0.0, 4.0, 9.0])
    service, slo = np.array([2.0, 9.0, 12.0]), np.array([8.0, 25.0, 25.0])  # utilisation 0.6-0.68
    p50, p99, within = q.request_latency(rate, batch, delay, service, slo, params)
    p50_2, p99_2, within_2 = q.request_latency(2 * rate, batch, delay / 2, service / 2, (slo - 2.0) / 2 + 2.0,
                                               params)
    np.testing.assert_allclose(p50_2 - 2.0, (p50 - 2.0) / 2)
    np.testing.assert_allclose(p99_2 - 2.0, (p99 - 2.0) / 2)
    np.testing.assert_allclose(within_2, within)
    assert np.all(np.isfinite(p99)) and np.all((within > 0) & (within < 1))


def test_latency_grows_and_attainment_falls_with_the_service_time() -> None:
    service = np.linspace(0.5, 11.6, 60)  # up to utilisation 0.967
    p50, p99, within = q.request_latency(500.0, 6, 4.0, service, 16.0, SMALL)
    assert np.all(np.diff(p50) >= 0) and np.all(np.diff(p99) >= 0) and np.all(np.diff(within) <= 0)
    assert p99[-1] > p99[0] and within[0] == 1.0 and within[-1] < 0.5


def test_overload_and_the_edges_of_the_table() -> None:
    rate, batch = 1000.0, 4
    top_ms = q.RHO_GRID[-1] * 1000.0 * batch / rate
    delay, service = [0.0, 0.0, 0.0, 100.0], [4.0, 5.0, 3.95, 1.0]
    p50, p99, within = q.request_latency(rate, batch, delay, service, 50.0, SMALL)
    assert (p50[0], p99[0], within[0]) == (math.inf, math.inf, 0.0)  # utilisation 1: no steady state
    assert (p50[1], within[1]) == (math.inf, 0.0)
    assert top_ms < 3.95 and math.isnan(p99[2]) and math.isnan(within[2])  # above the grid's utilisation
    assert math.isnan(p99[3]) and math.isnan(within[3])  # a delay above 2 (b - 1) / R
    assert q.max_service_ms(rate, batch, 0.0, 1e6, 0.99, SMALL)[()] == pytest.approx(top_ms)
    assert math.isnan(q.max_service_ms(rate, batch, 100.0, 50.0, 0.99, SMALL)[()])


def test_a_batch_of_one_ignores_the_queue_delay() -> None:
    a = q.request_latency(200.0, 1, 0.0, 3.0, 10.0, SMALL)
    b = q.request_latency(200.0, 1, 50.0, 3.0, 10.0, SMALL)
    assert [x[()] for x in a] == [x[()] for x in b]
    np.testing.assert_array_equal(q.queue_delay_candidates(200.0, [1, 3]),
                                  [[0.0] * 6, [0.0, 2.5, 5.0, 10.0, 15.0, 20.0]])


# ---------------------------------------------------------------------------------------------
# max_service_ms against request_latency


def random_placements(n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    rate = rng.uniform(50.0, 1500.0, n)
    batch = rng.integers(1, 9, n)
    delay = q.queue_delay_candidates(rate, batch)[np.arange(n), rng.integers(0, len(q.DELAY_FRACTIONS), n)]
    slo = 1000.0 * batch / rate * rng.uniform(1.0, 6.0, n) + delay
    return rate, batch, delay, slo


@pytest.mark.parametrize("attainment", [0.9, 0.99, 0.999])
def test_max_service_is_the_exact_boundary_of_request_latency(attainment) -> None:
    params = q.QueueingParams(client_ms=0.8, n_requests=SMALL.n_requests)
    rate, batch, delay, slo = random_placements(300, seed=int(attainment * 1000))
    s_max = q.max_service_ms(rate, batch, delay, slo, attainment, params)
    inner = np.isfinite(s_max) & (s_max > 0) & (s_max < q.RHO_GRID[-1] * 1000.0 * batch / rate)
    assert inner.sum() > 100
    below = q.request_latency(rate, batch, delay, s_max * (1 - 1e-7), slo, params)[2]
    above = q.request_latency(rate, batch, delay, s_max * (1 + 1e-7), slo, params)[2]
    assert np.all(below[inner] >= attainment)
    assert np.all(above[inner] < attainment)
    # where no service time works, even a vanishing one misses the attainment
    none = s_max == -np.inf
    assert np.all(q.request_latency(rate, batch, delay, 0.0, slo, params)[2][none] < attainment)


def test_the_batching_delay_alone_can_break_the_slo() -> None:
    # b 8 at 100 req/s: the first of a batch waits up to the delay of 140 ms; half the requests wait > 40 ms
    assert q.max_service_ms(100.0, 8, 140.0, 40.0, 0.99, SMALL)[()] == -np.inf


def test_an_attainment_off_the_level_grid_gets_a_table_with_that_level() -> None:
    assert 0.987 not in q.LEVELS
    args = (600.0, 5, 4.0, 20.0)
    s_low, s_mid, s_high = (q.max_service_ms(*args, a, SMALL)[()] for a in (0.985, 0.987, 0.99))
    assert s_low >= s_mid >= s_high and s_low > s_high
    assert q.cache_path(5, SMALL, q.levels_with(0.987)).is_file()


def test_planner_functions_reject_bad_input() -> None:
    with pytest.raises(InputError, match=r"^rate_rps must be finite and > 0$"):
        q.request_latency(0.0, 4, 1.0, 2.0, 10.0, SMALL)
    with pytest.raises(InputError, match=r"^batch must hold integers >= 1$"):
        q.max_service_ms(100.0, 2.5, 1.0, 10.0, 0.99, SMALL)
    with pytest.raises(InputError, match=r"^queue_delay_ms must be finite and >= 0$"):
        q.request_latency(100.0, 4, -1.0, 2.0, 10.0, SMALL)
    with pytest.raises(InputError, match=r"^attainment must be in \(0, 1\), got 1.0$"):
        q.max_service_ms(100.0, 4, 1.0, 10.0, 1.0, SMALL)


def test_params_validate_and_come_from_the_profile() -> None:
    p = q.QueueingParams.from_serving(ServingParams(overhead_ms=2.0, client_ms=1.1, service_cv=0.1), seed=4)
    assert (p.client_ms, p.service_cv, p.arrival, p.seed) == (1.1, 0.1, q.Arrival.POISSON, 4)
    assert q.QueueingParams(arrival="constant").arrival is q.Arrival.CONSTANT
    with pytest.raises(InputError, match=r"^arrival must be one of poisson, constant, got 'bursty'$"):
        q.QueueingParams(arrival="bursty")
    with pytest.raises(InputError, match=r"^client_ms must be a finite number >= 0, got -1.0$"):
        q.QueueingParams(client_ms=-1.0)
    with pytest.raises(InputError, match=r"^n_requests must be an integer >= 1000, got 10$"):
        q.QueueingParams(n_requests=10)


# ---------------------------------------------------------------------------------------------
# Cache


def test_cache_round_trip_reads_the_file_instead_of_simulating(monkeypatch) -> None:
    first = q.latency_table(3, SMALL)
    path = q.cache_path(3, SMALL)
    assert path.is_file() and path.parent == q.cache_dir()
    q.clear_memory_cache()

    def no_simulation(*args, **kwargs):
        raise AssertionError("the table should have come from the cache")

    monkeypatch.setattr(q, "build_table", no_simulation)
    again = q.latency_table(3, SMALL)
    np.testing.assert_array_equal(again.quantiles, first.quantiles)
    np.testing.assert_array_equal(again.sigma, first.sigma)


def test_cache_key_holds_everything_the_numbers_depend_on() -> None:
    paths = {q.cache_path(3, p) for p in (SMALL, q.QueueingParams(n_requests=4000, seed=1),
                                          q.QueueingParams(n_requests=4000, service_cv=0.2),
                                          q.QueueingParams(n_requests=4000, arrival="constant"),
                                          q.QueueingParams(n_requests=5000))}
    assert len(paths) == 5
    assert q.cache_path(3, SMALL) == q.cache_path(3, q.QueueingParams(n_requests=4000, client_ms=3.0))
    assert q.cache_path(3, SMALL) == q.cache_path(3, q.QueueingParams(n_requests=4e3, service_cv=0, seed=0.0))
    assert q.cache_path(3, SMALL) != q.cache_path(4, SMALL)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_numbers"])
def test_a_corrupt_cache_file_is_recomputed_with_a_warning(damage, caplog) -> None:
    good = q.latency_table(3, SMALL).quantiles.copy()
    path = q.cache_path(3, SMALL)
    if damage == "garbage":
        path.write_bytes(b"not a table")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:  # a valid file whose quantiles are not monotone
        with np.load(path) as z:
            parts = {k: z[k] for k in z.files}
        parts["quantiles"] = parts["quantiles"][:, ::-1]
        np.savez(path, **parts)
    q.clear_memory_cache()
    with caplog.at_level(logging.WARNING, logger="igniter_opt.placement.queueing"):
        again = q.latency_table(3, SMALL)
    assert f"serving-model cache {path} is unusable" in caplog.text and "recomputing it" in caplog.text
    np.testing.assert_array_equal(again.quantiles, good)
    q.clear_memory_cache()
    caplog.clear()
    np.testing.assert_array_equal(q.latency_table(3, SMALL).quantiles, good)  # rewritten: read back silently
    assert "unusable" not in caplog.text


def test_an_unwritable_cache_keeps_the_table_in_memory(tmp_path, monkeypatch, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("IGNITER_OPT_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING, logger="igniter_opt.placement.queueing"):
        table = q.latency_table(2, SMALL)
    assert "could not write the serving-model cache" in caplog.text
    assert table.quantiles.shape[0] == len(q.DELAY_FRACTIONS)
