"""The official Diffusion-QL code's compute, re-created for a same-machine speed comparison.

`diffrl bench` reports diffrl's own speed; this script runs, beside it, the computation the
official code (github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL, agents/ql_diffusion.py,
agents/diffusion.py, agents/model.py) performs per training step and per action, written here in
plain PyTorch in the same structure, so the ratio can be measured on any machine without its
gym/d4rl/mujoco-py dependencies:

- the noise model: cat([x, time_mlp(t), s]) -> 3 x (Linear 256, Mish) -> Linear, the time MLP
  recomputed from the sinusoid at every call;
- sampling: a Python loop over T steps, each gathering its coefficients with `extract`, a
  `torch.full` timestep tensor, clamping x0 in place, and the noise masked at t = 0;
- the critic: two separate nn.Sequential Q-networks on cat([s, a]);
- one training step: critic target from the EMA actor (built with autograd on, as the official
  code does), critic MSE and Adam step with grad-norm clipping, actor loss L_bc + eta * L_q
  with sampling through the chain, Adam step with clipping, EMA every 5 steps, Polyak update by a
  Python loop over parameters;
- acting: 50 copies of the state, one sample, min-Q of the target critic, softmax draw.

With `--official-repo PATH` (a checkout of that repository) it times the official code itself
instead: `Diffusion_QL.train(sampler, 10, batch_size)` and `Diffusion_QL.sample_action(obs)`, with
main.py's hopper-medium settings (vp schedule, T = 5, eta 1, grad norm 9, lr 3e-4, no lr decay),
on the same synthetic data. Its imports need python-dateutil and tabulate besides torch and numpy.

Run: python benchmarks/official_dql.py train|act [--obs-dim 11 --act-dim 3 --batch-size 256
      --seconds 20 --threads N --official-repo PATH --json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def vp_betas(T: int, b_min: float = 0.1, b_max: float = 10.0) -> torch.Tensor:
    t = np.arange(1, T + 1)
    alpha = np.exp(-b_min / T - 0.5 * (b_max - b_min) * (2 * t - 1) / T**2)
    return torch.tensor(1 - alpha, dtype=torch.float32)


def extract(a: torch.Tensor, t: torch.Tensor, shape) -> torch.Tensor:
    out = a.gather(-1, t)
    return out.reshape(t.shape[0], *((1,) * (len(shape) - 1)))


class SinPos(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        emb = math.log(10000) / (half - 1)
        emb = torch.exp(torch.arange(half, device=x.device) * -emb)
        emb = x[:, None] * emb[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class NoiseMLP(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, t_dim: int = 16, hidden: int = 256) -> None:
        super().__init__()
        self.time_mlp = nn.Sequential(
            SinPos(t_dim), nn.Linear(t_dim, 2 * t_dim), nn.Mish(), nn.Linear(2 * t_dim, t_dim)
        )
        self.mid = nn.Sequential(
            nn.Linear(obs_dim + act_dim + t_dim, hidden),
            nn.Mish(),
            nn.Linear(hidden, hidden),
            nn.Mish(),
            nn.Linear(hidden, hidden),
            nn.Mish(),
        )
        self.final = nn.Linear(hidden, act_dim)

    def forward(self, x, time, state):
        t = self.time_mlp(time)
        return self.final(self.mid(torch.cat([x, t, state], dim=1)))


class Diffusion(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, T: int = 5, max_action: float = 1.0) -> None:
        super().__init__()
        self.model = NoiseMLP(obs_dim, act_dim)
        self.act_dim, self.T, self.max_action = act_dim, T, max_action
        betas = vp_betas(T)
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, 0)
        ac_prev = torch.cat([torch.ones(1), ac[:-1]])
        self.register_buffer("sqrt_ac", ac.sqrt())
        self.register_buffer("sqrt_1m_ac", (1 - ac).sqrt())
        self.register_buffer("sqrt_recip_ac", (1 / ac).sqrt())
        self.register_buffer("sqrt_recipm1_ac", (1 / ac - 1).sqrt())
        post_var = betas * (1 - ac_prev) / (1 - ac)
        self.register_buffer("post_logvar", torch.log(post_var.clamp(min=1e-20)))
        self.register_buffer("c1", betas * ac_prev.sqrt() / (1 - ac))
        self.register_buffer("c2", (1 - ac_prev) * alphas.sqrt() / (1 - ac))

    def p_sample(self, x, t, s):
        eps = self.model(x, t, s)
        x_recon = (
            extract(self.sqrt_recip_ac, t, x.shape) * x
            - extract(self.sqrt_recipm1_ac, t, x.shape) * eps
        )
        x_recon.clamp_(-self.max_action, self.max_action)
        mean = extract(self.c1, t, x.shape) * x_recon + extract(self.c2, t, x.shape) * x
        logvar = extract(self.post_logvar, t, x.shape)
        noise = torch.randn_like(x)
        mask = (1 - (t == 0).float()).reshape(x.shape[0], 1)
        return mean + mask * (0.5 * logvar).exp() * noise

    def sample(self, s):
        x = torch.randn(s.shape[0], self.act_dim)
        for i in reversed(range(self.T)):
            x = self.p_sample(x, torch.full((s.shape[0],), i, dtype=torch.long), s)
        return x.clamp_(-self.max_action, self.max_action)

    def loss(self, a, s):
        t = torch.randint(0, self.T, (a.shape[0],)).long()
        noise = torch.randn_like(a)
        x = extract(self.sqrt_ac, t, a.shape) * a + extract(self.sqrt_1m_ac, t, a.shape) * noise
        return F.mse_loss(self.model(x, t, s), noise)

    def forward(self, s):
        return self.sample(s)


def q_net(in_dim: int, hidden: int = 256) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.Mish(),
        nn.Linear(hidden, hidden),
        nn.Mish(),
        nn.Linear(hidden, hidden),
        nn.Mish(),
        nn.Linear(hidden, 1),
    )


class Critic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        self.q1_model = q_net(obs_dim + act_dim)
        self.q2_model = q_net(obs_dim + act_dim)

    def forward(self, s, a):
        x = torch.cat([s, a], dim=-1)
        return self.q1_model(x), self.q2_model(x)

    def q_min(self, s, a):
        q1, q2 = self.forward(s, a)
        return torch.min(q1, q2)


class OfficialStyleDQL:
    def __init__(self, obs_dim: int, act_dim: int, eta: float = 1.0, grad_norm: float = 9.0):
        self.actor = Diffusion(obs_dim, act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.ema_model = copy.deepcopy(self.actor)
        self.critic = Critic(obs_dim, act_dim)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=3e-4)
        self.eta, self.grad_norm, self.step = eta, grad_norm, 0

    def train_step(self, s, a, s2, r, not_done):
        q1, q2 = self.critic(s, a)
        next_a = self.ema_model(s2)  # autograd on, as the official code
        tq1, tq2 = self.critic_target(s2, next_a)
        target = (r + not_done * 0.99 * torch.min(tq1, tq2)).detach()
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        nn.utils.clip_grad_norm_(self.critic.parameters(), max_norm=self.grad_norm)
        self.critic_opt.step()

        bc_loss = self.actor.loss(a, s)
        new_a = self.actor(s)
        n1, n2 = self.critic(s, new_a)
        if np.random.uniform() > 0.5:
            q_loss = -n1.mean() / n2.abs().mean().detach()
        else:
            q_loss = -n2.mean() / n1.abs().mean().detach()
        actor_loss = bc_loss + self.eta * q_loss
        self.actor_opt.zero_grad()
        actor_loss.backward()
        nn.utils.clip_grad_norm_(self.actor.parameters(), max_norm=self.grad_norm)
        self.actor_opt.step()

        if self.step % 5 == 0 and self.step >= 1000:
            for p_ema, p in zip(self.ema_model.parameters(), self.actor.parameters(), strict=True):
                p_ema.data = p_ema.data * 0.995 + (1 - 0.995) * p.data
        for p, tp in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
            tp.data.copy_(0.005 * p.data + (1 - 0.005) * tp.data)
        self.step += 1
        # the official loop logs these four every step
        return actor_loss.item(), bc_loss.item(), q_loss.item(), critic_loss.item()

    def sample_action(self, state: np.ndarray) -> np.ndarray:
        s = torch.FloatTensor(state.reshape(1, -1))
        s_rpt = torch.repeat_interleave(s, repeats=50, dim=0)
        with torch.no_grad():
            action = self.actor.sample(s_rpt)
            q = self.critic_target.q_min(s_rpt, action).flatten()
            idx = torch.multinomial(F.softmax(q, dim=0), 1)
        return action[idx].cpu().data.numpy().flatten()


class OfficialCode:
    """The official code itself, imported from a checkout, behind the same two calls."""

    def __init__(self, repo: str, obs_dim: int, act_dim: int, data: list[torch.Tensor], B: int):
        root = Path(repo).expanduser().resolve()
        if not (root / "agents" / "ql_diffusion.py").is_file():
            raise SystemExit(
                f"--official-repo {repo}: no agents/ql_diffusion.py there; give a checkout of "
                "github.com/Zhendong-Wang/Diffusion-Policies-for-Offline-RL"
            )
        sys.path.insert(0, str(root))
        try:
            from agents.ql_diffusion import Diffusion_QL
            from utils.data_sampler import Data_Sampler
        except ImportError as e:
            raise SystemExit(
                f"--official-repo {repo}: importing its code failed ({e}); it needs torch, numpy, "
                "python-dateutil and tabulate"
            ) from None
        s, a, s2, r, not_done = (d.numpy() for d in data)
        arrays = {"observations": s, "actions": a, "next_observations": s2}
        arrays |= {"rewards": r[:, 0], "terminals": 1.0 - not_done[:, 0]}
        self.sampler = Data_Sampler(arrays, "cpu", "no")
        # main.py's hopper-medium-v2 row: eta 1.0, gn 9.0, lr 3e-4; vp schedule, T = 5
        self.agent = Diffusion_QL(
            state_dim=obs_dim, action_dim=act_dim, max_action=1.0, device="cpu",
            discount=0.99, tau=0.005, max_q_backup=False, beta_schedule="vp", n_timesteps=5,
            eta=1.0, lr=3e-4, lr_decay=False, grad_norm=9.0,
        )  # fmt: skip
        self.agent.step = 1000  # the steady state: EMA updates on
        self.B = B

    def train_steps(self, n: int) -> None:
        self.agent.train(self.sampler, n, batch_size=self.B)

    def sample_action(self, state: np.ndarray) -> np.ndarray:
        return self.agent.sample_action(state)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["train", "act"])
    p.add_argument("--obs-dim", type=int, default=11)
    p.add_argument("--act-dim", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--official-repo", help="time the official code from this checkout instead")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    B = args.batch_size
    data = [torch.randn(4096, args.obs_dim), torch.rand(4096, args.act_dim) * 2 - 1]
    data += [torch.randn(4096, args.obs_dim), torch.randn(4096, 1), torch.ones(4096, 1)]
    if args.official_repo:
        agent = OfficialCode(args.official_repo, args.obs_dim, args.act_dim, data, B)
        code = f"official code ({args.official_repo})"
    else:
        agent = OfficialStyleDQL(args.obs_dim, args.act_dim)
        code = "official-style re-creation"
    # Training is timed in calls of `per` steps: the official loop's unit is train(sampler, n).
    per = 10 if args.what == "train" else 1
    if args.what == "train" and isinstance(agent, OfficialCode):

        def one() -> None:
            agent.train_steps(per)

        unit, scale = "steps_per_second", None
    elif args.what == "train":
        agent.step = 1000  # measure the steady state, EMA included

        def one() -> None:
            for _ in range(per):
                idx = torch.randint(0, 4096, (B,))
                agent.train_step(*(d[idx] for d in data))

        unit, scale = "steps_per_second", None
    else:
        obs = np.random.randn(args.obs_dim).astype(np.float32)

        def one() -> None:
            agent.sample_action(obs)

        unit, scale = "ms_per_action", 1e3
    for _ in range(10 // per):
        one()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        one()
        n += per
    elapsed = time.perf_counter() - start
    value = n / elapsed if scale is None else elapsed / n * scale
    result = {
        unit: round(value, 3),
        "iterations": n,
        "seconds": round(elapsed, 2),
        "threads": torch.get_num_threads(),
        "code": code,
    }
    print(json.dumps(result) if args.json else f"{unit}: {value:.3f} ({n} in {elapsed:.1f} s)")


if __name__ == "__main__":
    main()
