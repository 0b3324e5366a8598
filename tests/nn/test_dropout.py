"""Equivariant dropout (``[process.train.drop] dropout_rate``, hamflow.nn.dropout).

With dropout on (the training step) the output changes and depends on the key; with it off
(evaluation, inference: the default call) the output is deterministic and equal to that of the same
parameters at rate 0; and the blocks rotate with the Wigner D matrices in both modes, since a mask
shared by the 2l+1 components of a channel commutes with rotations and inversion.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import numpy as np
import pytest
from nn_batches import CLUSTER_NUMBERS, CLUSTER_POSITIONS, equivariance_error, molecule_batch, random_rotation

from hamflow.nn.dropout import channel_index, irreps_dropout
from hamflow.nn.model import build_model, init_params
from hamflow.nn.wigner import basis_rotation

SHELLS = (0, 0, 1, 2)
BASIS_SIZE = 10
SETTINGS = {
    "net_irreps": "8x0e+4x1o+2x1e+4x2e+2x2o+2x3o+2x4e",
    "num_blocks": 1,
    "rmax": 4.0,
    "consider_parity": True,
}
RATE = 0.3


@pytest.fixture(scope="module")
def networks():
    batch = molecule_batch(CLUSTER_POSITIONS, CLUSTER_NUMBERS, BASIS_SIZE)
    plain = build_model("sparrow", SHELLS, **SETTINGS)
    dropped = build_model("sparrow", SHELLS, **SETTINGS, dropout_rate=RATE)
    params = init_params(plain, batch, seed=0)

    @jax.jit
    def evaluate(params, batch):
        return dropped.apply(params, batch)

    @jax.jit
    def train(params, batch, key):
        return dropped.apply(params, batch, dropout=True, rngs={"dropout": key})

    return plain, params, evaluate, train, batch


def _batch(rotation):
    return molecule_batch(CLUSTER_POSITIONS @ rotation.T, CLUSTER_NUMBERS, BASIS_SIZE)


def test_channel_mask_is_shared_by_the_components_of_each_irrep():
    irreps = e3nn.Irreps("2x0e+1x1o+2x2e")
    assert channel_index(irreps).tolist() == [0, 1, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4]
    x = e3nn.IrrepsArray(irreps, np.ones((200, irreps.dim), np.float32))
    y = np.asarray(irreps_dropout(x, 0.5, jax.random.PRNGKey(1)).array)
    assert set(np.unique(y).tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - rate)
    for start, stop in ((2, 5), (5, 10), (10, 15)):
        assert (y[:, start:stop] == y[:, start:stop][:, :1]).all()
    assert 0.4 < float(np.mean(y == 0.0)) < 0.6
    assert irreps_dropout(x, 0.0, jax.random.PRNGKey(1)) is x


def test_training_output_differs_and_evaluation_equals_rate_zero(networks):
    plain, params, evaluate, train, batch = networks
    reference = np.asarray(jax.jit(plain.apply)(params, batch))
    first = np.asarray(evaluate(params, batch))
    np.testing.assert_array_equal(first, np.asarray(evaluate(params, batch)))  # deterministic
    np.testing.assert_array_equal(first, reference)  # evaluation: exactly the rate-0 network
    mask = np.asarray(batch.edge_mask)
    one = np.asarray(train(params, batch, jax.random.PRNGKey(0)))
    other = np.asarray(train(params, batch, jax.random.PRNGKey(1)))
    scale = float(np.max(np.abs(reference[mask])))
    assert float(np.max(np.abs(one[mask] - reference[mask]))) > 1e-3 * scale
    assert float(np.max(np.abs(one[mask] - other[mask]))) > 1e-3 * scale
    np.testing.assert_array_equal(one, np.asarray(train(params, batch, jax.random.PRNGKey(0))))
    assert np.all(one[~mask] == 0)


@pytest.mark.parametrize("improper", [False, True])
def test_equivariance_holds_in_evaluation_and_with_a_fixed_dropout_mask(networks, improper):
    _, params, evaluate, train, batch = networks
    rotation = random_rotation(5, improper=improper)
    d = basis_rotation(SHELLS, rotation)
    mask = np.asarray(batch.edge_mask)
    key = jax.random.PRNGKey(3)
    for run in (lambda b: evaluate(params, b), lambda b: train(params, b, key)):
        error, size = equivariance_error(np.asarray(run(batch)), np.asarray(run(_batch(rotation))), d, mask)
        assert error < 2e-5 * max(size, 1.0), (error, size)


@pytest.mark.slow
def test_the_train_step_drops_and_the_eval_step_does_not():
    """make_steps with dropout_steps: the train step's loss changes with the rate and with the step
    (a mask per optimizer step, the same again at the same step: resumption-exact); the eval step
    equals the rate-0 one."""
    import jax.numpy as jnp
    import optax

    from hamflow.graph.batch import GraphBatch
    from hamflow.train.normaliser import MAX_Z, Normaliser
    from hamflow.train.step import TrainState, dropout_steps, make_steps

    single = molecule_batch(CLUSTER_POSITIONS, CLUSTER_NUMBERS, BASIS_SIZE)
    real = np.asarray(single.edge_mask)[:, None, None] & np.ones((1, BASIS_SIZE, BASIS_SIZE), bool)
    labels = np.random.default_rng(0).normal(size=real.shape).astype(np.float32) * real
    single = single._replace(labels=labels, label_mask=real)
    stacked = GraphBatch(*(np.asarray(x)[None] for x in single))
    normaliser = Normaliser(
        species_of_z=np.zeros(MAX_Z, dtype=np.int32),
        onsite_scale=np.ones((1, BASIS_SIZE, BASIS_SIZE), np.float32),
        offsite_scale=np.ones((1, 1, BASIS_SIZE, BASIS_SIZE), np.float32),
        onsite_offset=np.zeros((1, BASIS_SIZE, BASIS_SIZE), np.float32),
    )
    optimizer = optax.sgd(1e-3)
    losses = {}
    for rate in (0.0, RATE):
        model = build_model("sparrow", SHELLS, **SETTINGS, dropout_rate=rate)
        params = init_params(model, single, seed=0)["params"]

        def apply_fn(p, b, model=model):
            return model.apply({"params": p}, b)

        train_step, eval_step = make_steps(
            apply_fn,
            optimizer,
            normaliser,
            loss_type="mse",
            standardize_gauge=False,
            spinful=False,
            **dropout_steps(model, rate, seed=137),
        )
        assert bool(dropout_steps(model, rate, seed=137)) == (rate > 0)
        train_step, eval_step = jax.jit(train_step), jax.jit(eval_step)

        def loss_at(step, params=params, train_step=train_step):
            state = TrainState(params, optimizer.init(params), jnp.asarray(step, jnp.int32), jnp.ones(()))
            return float(train_step(state, stacked, jnp.float32(1e-3))[1].loss)

        losses[rate] = {
            "train": [loss_at(0), loss_at(0), loss_at(1)],
            "eval": float(eval_step(params, stacked).loss),
        }
    plain, dropped = losses[0.0], losses[RATE]
    assert plain["train"][0] == plain["train"][1] == plain["train"][2]  # no dropout: step-independent
    assert plain["train"][0] == pytest.approx(plain["eval"], rel=1e-6)
    assert dropped["eval"] == plain["eval"]  # evaluation never drops
    assert dropped["train"][0] == dropped["train"][1]  # same step, same mask
    assert dropped["train"][0] != dropped["train"][2]  # another step, another mask
    assert abs(dropped["train"][0] - plain["train"][0]) > 1e-4 * plain["train"][0]
