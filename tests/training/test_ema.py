"""EMA against a numpy restatement of the reference LitEma (ldm/modules/ema.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.training.ema import EmaSettings, ema_decay, ema_init, ema_update


class NumpyLitEma:
    """LitEma.forward with use_num_upates=True: count first, then decay = min(decay, (1+n)/(10+n))."""

    def __init__(self, params: dict, decay: float, use_num_updates: bool = True):
        self.shadow = {k: np.array(v, np.float32) for k, v in params.items()}
        self.decay = decay
        self.num_updates = 0 if use_num_updates else -1

    def __call__(self, params: dict):
        decay = self.decay
        if self.num_updates >= 0:
            self.num_updates += 1
            decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        one_minus_decay = 1.0 - decay
        for k in self.shadow:
            self.shadow[k] -= np.float32(one_minus_decay) * (self.shadow[k] - params[k])


def _trajectory(steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [{"w": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32)}
            for _ in range(steps)]


@pytest.mark.parametrize("decay, warmup", [(0.9999, True), (0.5, True), (0.9, False)])
def test_matches_lit_ema_over_several_steps(decay, warmup):
    trajectory = _trajectory(6)
    reference = NumpyLitEma(trajectory[0], decay, use_num_updates=warmup)
    ema = ema_init({k: jnp.asarray(v) for k, v in trajectory[0].items()}, EmaSettings(True, decay, warmup))
    count = jnp.zeros((), jnp.int32)
    update = jax.jit(ema_update, static_argnames=("warmup",))
    for params in trajectory[1:]:
        reference(params)
        ema, count = update(ema, params, count, decay, warmup=warmup)
        for k in params:
            np.testing.assert_allclose(np.asarray(ema[k]), reference.shadow[k], rtol=1e-6, atol=1e-6)
    assert int(count) == len(trajectory) - 1


def test_warmup_decay_values():
    # The first update uses 2/11, the ramp crosses 0.9 at n = 80: (1 + 80) / 90 = 0.9.
    assert float(ema_decay(0.9999, 1)) == pytest.approx(2 / 11)
    assert float(ema_decay(0.9999, 10)) == pytest.approx(11 / 20)
    assert float(ema_decay(0.9, 200)) == pytest.approx(0.9)
    assert float(ema_decay(0.9, 1, warmup=False)) == pytest.approx(0.9)


def test_first_update_moves_most_of_the_way():
    ema = {"w": jnp.zeros(3)}
    new, count = ema_update(ema, {"w": jnp.ones(3)}, 0, decay=0.9999)
    np.testing.assert_allclose(np.asarray(new["w"]), 1 - 2 / 11, rtol=1e-6)
    assert int(count) == 1


def test_off_gives_none_and_on_gives_fresh_buffers():
    params = {"w": jnp.arange(4.0)}
    assert ema_init(params, EmaSettings(use_ema=False)) is None
    ema = ema_init(params, EmaSettings())
    np.testing.assert_array_equal(np.asarray(ema["w"]), np.asarray(params["w"]))
    assert ema["w"] is not params["w"]

    # Donating params and their average together must not donate one buffer twice.
    def step(params, ema):
        return jax.tree.map(lambda p: p + 1, params), ema_update(ema, params, 0)[0]

    params, ema = jax.jit(step, donate_argnums=(0, 1))(params, ema)
    np.testing.assert_array_equal(np.asarray(params["w"]), np.arange(4.0) + 1)


def test_keeps_each_leaf_dtype():
    ema = {"w": jnp.zeros(2, jnp.bfloat16)}
    new, _ = ema_update(ema, {"w": jnp.ones(2, jnp.bfloat16)}, 5)
    assert new["w"].dtype == jnp.bfloat16


def test_settings_from_config():
    assert EmaSettings.from_config({"use_ema": None, "decay": 0.99}, use_ema_default=False) == EmaSettings(
        False, 0.99, True)
    assert EmaSettings.from_config({"use_ema": True}, use_ema_default=False).use_ema
    with pytest.raises(ValueError, match="ema.decay"):
        EmaSettings(decay=1.5)
