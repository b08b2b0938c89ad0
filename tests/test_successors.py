"""The successors: flow matching against an exact solution, FQL's losses, IDQL's acting rules,
and EDP's action approximation in Diffusion-QL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrl.algos import DataSpec, get_algo
from diffrl.diffusion import DDPMSampler, make_schedule
from diffrl.diffusion.flow import (
    FlowEulerSampler,
    FlowMidpointSampler,
    FlowPath,
    make_flow_sampler,
)
from diffrl.errors import ConfigError

SPEC = DataSpec(3, 2, (-1.0, -2.0), (1.0, 2.0))


# ------------------------------------------------------------------------------ flow matching
def _gaussian_velocity(mu: torch.Tensor, s: float):
    """The exact marginal velocity of the linear path from N(0, I) to N(mu, s^2 I): x_t is
    N(t mu, sigma_t^2) with sigma_t^2 = (1 - t)^2 + t^2 s^2, and the flow moves each point as
    x_t = t mu + sigma_t eps, so v(x, t) = mu + (sigma_t' / sigma_t) (x - t mu)."""

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t[:, None].to(x.dtype)
        var = (1 - t) ** 2 + t**2 * s**2
        return mu + (t * s**2 - (1 - t)) / var * (x - t * mu)

    return v


def test_flow_samplers_reach_the_exact_solution_at_their_order():
    mu, s = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.3
    eps = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = mu + s * eps  # where the ODE takes each starting point
    v = _gaussian_velocity(mu, s)

    def error(sampler) -> float:
        return float((sampler.sample(v, eps) - exact).abs().max())

    e1, e2 = error(FlowEulerSampler(100)), error(FlowEulerSampler(200))
    m1, m2 = error(FlowMidpointSampler(20)), error(FlowMidpointSampler(40))
    assert e2 < 0.02 and m2 < 1e-3
    assert 1.8 < e1 / e2 < 2.2  # first order
    assert m1 / m2 > 3.5  # at least second order
    assert m1 < e2  # 40 model calls of midpoint beat 200 of Euler
    assert FlowMidpointSampler(20).num_evals == 40 and FlowEulerSampler(7).num_evals == 7


def test_flow_path_and_after_step():
    path = FlowPath()
    x0, x1 = torch.zeros(4, 2), torch.ones(4, 2)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    torch.testing.assert_close(path.interpolate(x0, x1, t), t[:, None].expand(4, 2))
    torch.testing.assert_close(path.velocity(x0, x1), x1 - x0)
    # The exact conditional velocity makes the loss zero.
    assert float(path.loss(lambda x, t: x1 - x0, x1, x0=x0, t=t)) == 0.0
    seen: list[float] = []
    FlowEulerSampler(4).sample(lambda x, t: x, x0, after_step=lambda x, t: seen.append(t) or x)
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ConfigError, match="unknown flow sampler 'rk4' .known: euler, midpoint."):
        make_flow_sampler("rk4", 5)
    with pytest.raises(ConfigError, match="sampling_steps must be >= 1, got 0"):
        make_flow_sampler("euler", 0)


def test_flow_matching_learns_a_gaussian():
    """A learning signal: a small velocity net trained by the flow-matching loss moves noise
    onto N(2, 0.5^2) (mean and spread within a few per cent)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    path = FlowPath()

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([x, t[:, None]], dim=-1))

    for _ in range(1500):
        loss = path.loss(v, 2.0 + 0.5 * torch.randn(256, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x = FlowMidpointSampler(20).sample(v, torch.randn(4000, 1))
    assert abs(float(x.mean()) - 2.0) < 0.05 and abs(float(x.std()) - 0.5) < 0.05


# ------------------------------------------------------------------------------ FQL
def _batch(n: int = 16):
    from diffrl.data import TransitionBatch

    g = torch.Generator().manual_seed(1)
    return TransitionBatch(
        obs=torch.randn(n, 3, generator=g),
        action=torch.rand(n, 2, generator=g) * torch.tensor([2.0, 4.0]) - torch.tensor([1.0, 2.0]),
        reward=torch.randn(n, 1, generator=g),
        next_obs=torch.randn(n, 3, generator=g),
        not_done=torch.ones(n, 1),
    )


def _fql(**over):
    module = get_algo("fql")
    torch.manual_seed(0)
    return module.Agent(module.Config(hidden=32, n_layers=2, **over), SPEC)


def test_fql_distillation_target_is_the_bc_flow_by_euler_and_acting_is_one_call():
    agent = _fql(flow_steps=10)
    obs, z = torch.randn(5, 3), torch.randn(5, 2)
    x = z.clone()
    for k in range(10):
        x = x + agent.velocity(obs, x, torch.full((5,), k / 10)) / 10
    torch.testing.assert_close(agent.flow_actions(obs, z), x.clamp(-1, 1))
    calls = []
    agent.onestep.register_forward_hook(lambda *a: calls.append(1))
    agent.bc_flow.register_forward_hook(lambda *a: calls.append(2))
    a = agent.act(torch.randn(7, 3), torch.Generator().manual_seed(0))
    assert calls == [1] and a.shape == (7, 2)
    assert (a[:, 0].abs() <= 1).all() and (a[:, 1].abs() <= 2).all()


def test_fql_candidates_keep_the_sample_the_critics_score_highest():
    """`candidates` N: N one-step actions per state (one call), the critics' best kept (the
    mean of the two with q_agg=mean, their min with q_agg=min); N = 1 is one plain sample."""
    for agg in ("mean", "min"):
        agent = _fql(candidates=8, q_agg=agg)
        seen = {}

        def q_values(critics, obs, x, seen=seen):  # critics that disagree on the dimensions
            seen["x"] = x
            return torch.stack([x[:, :1], -x[:, 1:]])

        agent.q_values = q_values
        a = agent.act(torch.zeros(3, 3), torch.Generator().manual_seed(0))
        cands = seen["x"].view(3, 8, 2)
        score = (cands[..., 0] - cands[..., 1]) / 2 if agg == "mean" else None
        if score is None:
            score = torch.minimum(cands[..., 0], -cands[..., 1])
        best = cands[torch.arange(3), score.argmax(1)]
        torch.testing.assert_close(a, best * torch.tensor([1.0, 2.0]))  # SPEC's action box
    one = _fql().act(torch.zeros(3, 3), torch.Generator().manual_seed(0))
    z = torch.randn((3, 2), generator=torch.Generator().manual_seed(0))
    plain = _fql()
    expected = plain.one_step(torch.zeros(3, 3), z).clamp(-1, 1) * torch.tensor([1.0, 2.0])
    torch.testing.assert_close(one, expected)


def test_fql_gradients_follow_the_losses():
    """The BC flow learns from L_BC only (the distillation target carries no gradient); the
    one-step policy from alpha L_D + L_Q; the critics from L_Q's critic loss only (they are
    constant in the actor's Q term)."""
    batch = _batch()
    grads = {}
    for alpha in (0.0, 5.0):
        agent = _fql(alpha=alpha)
        agent.optimizer.step = lambda: None  # keep the weights; read the gradients
        torch.manual_seed(3)
        agent.update(batch)
        grads[alpha] = {
            name: [p.grad.clone() for p in getattr(agent, name).parameters()]
            for name in ("bc_flow", "onestep", "critics")
        }
    for name in ("bc_flow", "critics"):  # alpha touches neither
        for a, b in zip(grads[0.0][name], grads[5.0][name], strict=True):
            torch.testing.assert_close(a, b)
    assert any(
        not torch.allclose(a, b)
        for a, b in zip(grads[0.0]["onestep"], grads[5.0]["onestep"], strict=True)
    )


def test_fql_and_idql_have_their_presets():
    fql, idql = get_algo("fql"), get_algo("idql")
    assert fql.presets("hopper-medium-expert-v0")["normalize_q_loss"] is True
    assert fql.Config().alpha == 10.0  # the official default, the stated rule
    assert idql.Config().candidates == 64 and idql.Config().act_rule == "argmax"


# ------------------------------------------------------------------------------ IDQL
def _idql(**over):
    module = get_algo("idql")
    torch.manual_seed(0)
    return module.Agent(module.Config(hidden=32, critic_hidden=32, diffusion_steps=5, **over), SPEC)


def test_idql_argmax_executes_the_candidate_with_the_largest_min_q():
    agent = _idql(candidates=8)
    agent.eval()
    seen = {}

    def q_min(obs, actions):  # a critic that likes the first action dimension
        seen["actions"] = actions
        return actions[:, :1]

    agent.critic_target.q_min = q_min
    a = agent.act(torch.zeros(3, 3), torch.Generator().manual_seed(0))
    cands = seen["actions"].view(3, 8, 2)
    torch.testing.assert_close(a, cands[torch.arange(3), cands[:, :, 0].argmax(1)])


class _Zero(torch.nn.Module):
    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.zeros(s.shape[0], 1)


def test_idql_expectile_resampling_weights_above_the_value():
    agent = _idql(candidates=16, act_rule="expectile", expectile=0.99)
    agent.eval()
    agent.critic_target.q_min = lambda obs, actions: actions[:, :1]
    agent.value = _Zero()  # V = 0: above it means a_0 > 0
    a = agent.act(torch.zeros(400, 3), torch.Generator().manual_seed(0))
    # Nearly every draw is a candidate above V (weights 0.99 against 0.01).
    assert float((a[:, 0] > 0).float().mean()) > 0.9


def test_idql_value_is_an_expectile():
    """Trained by `update` against a fixed critic, V(s) approaches the tau-expectile of
    Q(s, a) over the data's actions (here Q = a_0 uniform on [-1, 1]; its 0.9-expectile is
    0.5, where 0.9 (1 - m)^2 = 0.1 (1 + m)^2)."""
    from diffrl.data import TransitionBatch

    agent = _idql(expectile=0.9, lr=1e-2)
    agent.critic_target.q_min = lambda obs, actions: actions[:, :1]
    g = torch.Generator().manual_seed(0)
    for _ in range(500):
        a = torch.rand(256, 2, generator=g) * 2 - 1
        zeros = torch.zeros(256, 3)
        agent.update(TransitionBatch(zeros, a, torch.zeros(256, 1), zeros, torch.ones(256, 1)))
    with torch.no_grad():
        assert abs(float(agent.value(torch.zeros(1, 3))) - 0.5) < 0.05


# ------------------------------------------------------------------------------ EDP
def test_edp_estimate_is_the_samplers_x0_from_the_same_prediction():
    module = get_algo("diffusion-ql")
    torch.manual_seed(0)
    agent = module.Agent(module.Config(hidden=32, compile=False, q_action="approx"), SPEC)
    actor = agent.actor
    action, obs = torch.zeros(6, 2), torch.randn(6, 3)
    t = torch.tensor([0, 1, 2, 3, 4, 4])
    noise = torch.randn(6, 2)
    loss, estimate = actor.loss_and_estimate(action, obs, t, noise)
    torch.testing.assert_close(loss, actor.loss(action, obs, t, noise))
    ddpm = DDPMSampler(make_schedule("vp", 5), clip_x0=1.0)
    x0 = actor.normalize_action(action)
    from diffrl.diffusion import q_sample

    x_t = q_sample(actor.schedule, x0, t, noise)
    eps = actor.denoiser(x_t, t, obs)
    for i in range(6):
        want = ddpm.predict_x0(eps[i : i + 1], int(t[i]), x_t[i : i + 1])
        torch.testing.assert_close(estimate[i : i + 1], want)


def test_edp_trains_without_running_the_chain_with_gradients():
    module = get_algo("diffusion-ql")
    torch.manual_seed(0)
    agent = module.Agent(module.Config(hidden=32, compile=False, q_action="approx"), SPEC)
    calls = []
    real = agent.actor.ddpm_chain
    agent.actor.ddpm_chain = lambda *a, **k: calls.append(1) or real(*a, **k)
    metrics = agent.update(_batch())
    assert calls == [] and np.isfinite(metrics["q_loss"])  # the target's chain is the EMA's
    with pytest.raises(ConfigError, match="config key 'q_action' must be one of chain \\| approx"):
        module.Config(q_action="edp")
