"""Optimizers: the reference LambdaLinearScheduler, clipping, accumulation, AdamW and precision."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldm_jax.training import optimizers


class NumpyLambdaScheduler:
    """ldm/lr_scheduler.py LambdaWarmUpCosineScheduler2 / LambdaLinearScheduler.schedule, restated."""

    def __init__(self, warm_up_steps, f_min, f_max, f_start, cycle_lengths, linear=True):
        self.warm, self.f_min, self.f_max, self.f_start = warm_up_steps, f_min, f_max, f_start
        self.cycle_lengths, self.linear = cycle_lengths, linear
        self.cum_cycles = np.cumsum([0] + list(cycle_lengths))

    def find_in_interval(self, n):
        interval = 0
        for cl in self.cum_cycles[1:]:
            if n <= cl:
                return interval
            interval += 1

    def schedule(self, n):
        cycle = self.find_in_interval(n)
        n = n - self.cum_cycles[cycle]
        if n < self.warm[cycle]:
            return (self.f_max[cycle] - self.f_start[cycle]) / self.warm[cycle] * n + self.f_start[cycle]
        if self.linear:
            return self.f_min[cycle] + (self.f_max[cycle] - self.f_min[cycle]) * (
                self.cycle_lengths[cycle] - n) / self.cycle_lengths[cycle]
        t = min((n - self.warm[cycle]) / (self.cycle_lengths[cycle] - self.warm[cycle]), 1.0)
        return self.f_min[cycle] + 0.5 * (self.f_max[cycle] - self.f_min[cycle]) * (1 + np.cos(t * np.pi))


def _settings(**overrides):
    config = optimizers.default_optimizer_config()
    schedule = overrides.pop("schedule", {})
    config.update(overrides)
    config.schedule.update(schedule)
    return config


CYCLES = dict(warm_up_steps=[100, 50], f_start=[1e-6, 0.2], f_max=[1.0, 0.8], f_min=[0.1, 0.05],
              cycle_lengths=[1000, 500])


@pytest.mark.parametrize("kind", ["lambda_linear", "lambda_warmup_cosine"])
def test_lambda_schedules_match_the_reference(kind):
    reference = NumpyLambdaScheduler(CYCLES["warm_up_steps"], CYCLES["f_min"], CYCLES["f_max"], CYCLES["f_start"],
                                     CYCLES["cycle_lengths"], linear=kind == "lambda_linear")
    schedule = optimizers.make_schedule(_settings(schedule=dict(kind=kind, **CYCLES)), learning_rate=2e-4)
    steps = [0, 1, 50, 99, 100, 101, 500, 999, 1000, 1001, 1025, 1049, 1050, 1300, 1500]
    ours = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps)))
    expected = np.asarray([2e-4 * reference.schedule(n) for n in steps])
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-12)


def test_stable_diffusion_warmup_and_past_the_last_cycle():
    # SD v1's scheduler_config: 10k warm-up steps from 1e-6 to 1, then constant 1.
    schedule = optimizers.make_schedule(_settings(schedule=dict(kind="lambda_linear")), learning_rate=1.0)
    assert float(schedule(0)) == pytest.approx(1e-6)
    assert float(schedule(5000)) == pytest.approx(0.5, rel=1e-5)
    assert float(schedule(20000)) == pytest.approx(1.0)
    short = optimizers.make_schedule(_settings(schedule=dict(kind="lambda_linear", warm_up_steps=[0],
                                                             cycle_lengths=[10], f_min=[0.3])), 1.0)
    assert float(short(10)) == pytest.approx(0.3)
    assert float(short(1000)) == pytest.approx(0.3)  # held at the end value (the reference raises)


def test_constant_and_linear_warmup():
    assert float(optimizers.make_schedule(_settings(), 3e-4)(12345)) == pytest.approx(3e-4)
    warm = optimizers.make_schedule(_settings(schedule=dict(kind="linear_warmup", warmup_steps=10)), 1.0)
    assert [float(warm(n)) for n in (0, 5, 10, 20)] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    none = optimizers.make_schedule(_settings(schedule=dict(kind="linear_warmup", warmup_steps=0)), 1.0)
    assert float(none(0)) == pytest.approx(1.0)


def test_resolved_learning_rate_scales_like_main_py():
    assert optimizers.resolved_learning_rate(_settings(base_learning_rate=1e-6), 64) == pytest.approx(6.4e-5)
    assert optimizers.resolved_learning_rate(
        _settings(base_learning_rate=1e-6, accumulate_grad_batches=2), 64) == pytest.approx(1.28e-4)
    assert optimizers.resolved_learning_rate(_settings(base_learning_rate=1e-6, scale_lr=False), 64) == 1e-6
    assert optimizers.resolved_learning_rate(_settings(learning_rate=5e-5), 64) == 5e-5


def _params():
    return {"a": jnp.array([3.0, -4.0]), "b": {"c": jnp.array([[1.0, 2.0], [0.5, -1.0]])}}


def _adam_first_moment(opt_state):
    found = optax.tree_utils.tree_get_all_with_path(opt_state, "mu")
    assert found, "no Adam first moment in the state"
    return found[0][1]


def test_clipping_bounds_the_gradient_the_optimizer_sees():
    b1 = 0.9
    tx = optimizers.make_optimizer(_settings(grad_clip_norm=0.5, weight_decay=0.0, b1=b1), 1.0)
    params = _params()
    big = jax.tree.map(lambda p: 10.0 * p, params)  # global norm 10 * sqrt(31.25)
    _, state = tx.update(big, tx.init(params), params)
    seen = jax.tree.map(lambda m: m / (1 - b1), _adam_first_moment(state))  # mu = (1 - b1) g after one step
    assert float(optax.tree.norm(seen)) == pytest.approx(0.5, rel=1e-5)
    for s, g in zip(jax.tree.leaves(seen), jax.tree.leaves(big)):  # same direction, scaled down
        np.testing.assert_allclose(np.asarray(s), np.asarray(g) * 0.5 / float(optax.tree.norm(big)), rtol=1e-5)
    small = jax.tree.map(lambda p: 1e-3 * p, params)  # below the bound: passes unchanged
    _, state = tx.update(small, tx.init(params), params)
    for s, g in zip(jax.tree.leaves(_adam_first_moment(state)), jax.tree.leaves(small)):
        np.testing.assert_allclose(np.asarray(s) / (1 - b1), np.asarray(g), rtol=1e-5)


def test_adamw_matches_torch_defaults_on_one_step():
    # torch AdamW, first step: p -= lr * wd * p, then p -= lr * m_hat / (sqrt(v_hat) + eps) = lr * sign(g).
    lr, wd = 1e-2, 0.01
    tx = optimizers.make_optimizer(_settings(weight_decay=wd), lr)
    params = _params()
    grads = jax.tree.map(lambda p: 0.3 * p + 0.1, params)
    updates, state = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    for p, g, n in zip(jax.tree.leaves(params), jax.tree.leaves(grads), jax.tree.leaves(new)):
        p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
        expected = p * (1 - lr * wd) - lr * g / (np.abs(g) + 1e-8)
        np.testing.assert_allclose(np.asarray(n), expected, rtol=1e-5, atol=1e-7)
    assert float(optimizers.current_learning_rate(state)) == pytest.approx(lr)


def test_multisteps_updates_every_k_with_the_mean_gradient():
    k = 3
    settings = dict(weight_decay=0.0, name="adamw")
    accumulated = optimizers.make_optimizer(_settings(accumulate_grad_batches=k, **settings), 0.1)
    plain = optimizers.make_optimizer(_settings(**settings), 0.1)
    params = _params()
    rng = np.random.default_rng(0)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params) for _ in range(k)]
    state = accumulated.init(params)
    current = params
    for i, g in enumerate(grads):
        updates, state = accumulated.update(g, state, current)
        if i < k - 1:  # no update before the k-th call
            assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates))
        current = optax.apply_updates(current, updates)
    mean = jax.tree.map(lambda *gs: sum(gs) / k, *grads)
    expected_updates, plain_state = plain.update(mean, plain.init(params), params)
    expected = optax.apply_updates(params, expected_updates)
    for a, b in zip(jax.tree.leaves(current), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert float(optimizers.current_learning_rate(state)) == pytest.approx(0.1)


def test_learning_rate_in_the_state_follows_the_schedule():
    tx = optimizers.make_optimizer(_settings(schedule=dict(kind="linear_warmup", warmup_steps=4)), 1.0)
    params = _params()
    state = tx.init(params)
    rates = []
    for _ in range(3):
        _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        rates.append(float(optimizers.current_learning_rate(state)))
    assert rates == pytest.approx([0.0, 0.25, 0.5])


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="optimizer.name"):
        optimizers.make_optimizer(_settings(name="sgd"), 1e-4)
    with pytest.raises(ValueError, match="optimizer.schedule.kind"):
        optimizers.make_optimizer(_settings(schedule=dict(kind="cosine")), 1e-4)
    with pytest.raises(ValueError, match="one entry per cycle"):
        optimizers.make_optimizer(_settings(schedule=dict(kind="lambda_linear", f_min=[1.0, 2.0])), 1e-4)
    with pytest.raises(ValueError, match="accumulate_grad_batches"):
        optimizers.make_optimizer(_settings(accumulate_grad_batches=0), 1e-4)
    with pytest.raises(ValueError, match="float16 needs loss scaling.*use bfloat16"):
        optimizers.Precision.from_config({"compute_dtype": "float16"})
    with pytest.raises(ValueError, match=r"precision.compute_dtype must be one of \['bfloat16', 'float32'\]"):
        optimizers.Precision.from_config({"compute_dtype": "int8"})


def test_precision_policy():
    policy = optimizers.Precision.from_config({"compute_dtype": "bfloat16", "remat": True})
    assert policy.module_kwargs() == {"dtype": jnp.bfloat16, "param_dtype": jnp.float32}
    assert policy.remat
    assert optimizers.Precision.from_config(None).module_kwargs()["dtype"] == jnp.float32
