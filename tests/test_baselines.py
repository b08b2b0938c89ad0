"""The d3rlpy baselines (TD3+BC, IQL, BC) inside diffrl's loop: plumbing and a learning signal."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from diffrl.algos import DataSpec, get_algo
from diffrl.data import OfflineDataset
from diffrl.errors import ConfigError

pytest.importorskip("d3rlpy")


def linear_dataset(n: int = 2000, seed: int = 0) -> OfflineDataset:
    """Noisy actions around a_opt = tanh(s W), rewarded -||a - a_opt||^2.

    infos["optimal"] holds a_opt: BC recovers it as the data's mean, the Q-learners also from
    the rewards.
    """
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, 4)).astype(np.float32)
    w = rng.standard_normal((4, 2)).astype(np.float32)
    optimal = np.tanh(obs @ w).astype(np.float32)
    actions = np.clip(optimal + 0.3 * rng.standard_normal((n, 2)), -1, 1).astype(np.float32)
    timeouts = np.zeros(n, dtype=bool)
    timeouts[99::100] = True
    return OfflineDataset(
        observations=obs,
        actions=actions,
        rewards=-((actions - optimal) ** 2).sum(1).astype(np.float32),
        next_observations=rng.standard_normal((n, 4)).astype(np.float32),
        terminals=np.zeros(n, dtype=bool),
        timeouts=timeouts,
        infos={"optimal": optimal},
    )


def make(algo: str, **over):
    module = get_algo(algo)
    config = module.Config(algo=algo, dataset="x", batch_size=64, steps=400, **over)
    spec = DataSpec(obs_dim=4, act_dim=2, action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
    return module.Agent(config, spec)


@pytest.mark.parametrize("algo", ["bc", "td3bc", "iql"])
def test_training_moves_actions_towards_the_data(algo):
    torch.manual_seed(0)
    data = linear_dataset()
    agent = make(algo)
    agent.fit_normalizers(data)
    sampler = agent.batch_sampler(data, torch.device("cpu"))
    obs = torch.as_tensor(data.observations[:500])
    target = torch.as_tensor(data.infos["optimal"][:500])
    before = (agent.act(obs) - target).pow(2).mean().item()
    for _ in range(400):
        metrics = agent.update(sampler.sample(64))
    after = (agent.act(obs) - target).pow(2).mean().item()
    assert all(np.isfinite(v) for v in metrics.values())
    assert after < 0.5 * before, (before, after)


def test_iql_scales_rewards_by_the_return_spread():
    data = linear_dataset()
    agent = make("iql")
    agent.fit_normalizers(data)
    returns = data.episode_returns()
    assert float(agent.reward_scale) == pytest.approx(1000.0 / (returns.max() - returns.min()))
    off = make("iql", reward_norm="none")
    off.fit_normalizers(data)
    assert float(off.reward_scale) == 1.0


def test_iql_layer_norm_is_in_the_q_and_v_networks_only():
    def norms(agent, part):
        return sum(
            isinstance(m, torch.nn.LayerNorm)
            for name, net in agent.nets.items()
            if part in name
            for m in net.modules()
        )

    plain, normed = make("iql"), make("iql", layer_norm=True)
    assert norms(plain, "") == 0
    # Two hidden layers per network: twin Qs (and their targets) and V have them, the policy not.
    assert norms(normed, "q_funcs") == 2 * 4 and norms(normed, "value_func") == 2
    assert norms(normed, "policy") == 0
    # Without layer norm the networks are d3rlpy's default ones (checkpoints from before load).
    import d3rlpy

    algo = d3rlpy.algos.IQLConfig().create(device=False)
    algo.create_impl((4,), 2)
    default = {
        f"{name}.{k}": tuple(v.shape)
        for name, net in algo.impl.modules.get_torch_modules().items()
        for k, v in net.state_dict().items()
    }
    ours = {
        f"{name}.{k}": tuple(v.shape)
        for name, net in plain.nets.items()
        for k, v in net.state_dict().items()
    }
    assert ours == default


def test_missing_d3rlpy_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_d3rlpy(name, *args, **kwargs):
        if name == "d3rlpy":
            raise ImportError("No module named 'd3rlpy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_d3rlpy)
    with pytest.raises(ConfigError, match="pip install --no-deps d3rlpy==2.8.1"):
        make("bc")
