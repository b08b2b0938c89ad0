"""QGPO: energy-guided diffusion sampling with Contrastive Energy Prediction.

Paper: C. Lu, H. Chen, J. Chen, H. Su, C. Li, J. Zhu, "Contrastive Energy Prediction for Exact
Energy-Guided Diffusion Sampling in Offline Reinforcement Learning", ICML 2023 (arXiv 2304.12824).
Official code: github.com/ChenDRAG/CEP-energy-guided-diffusion (``train_behavior.py``,
``train_critic.py``, ``diffusion_SDE/model.py``: ScoreNet, QGPO_Critic, GuidanceQt).

The policy is pi(a|s) proportional to mu(a|s) exp(beta Q(s, a)) (paper eq. 2), sampled without
ever training an actor: the behaviour model mu is an exact diffusion model, and its noise
prediction is shifted by the gradient of a learned intermediate energy (paper eq. 8-9):

    eps_guided(a_t, s, t) = eps_theta(a_t, s, t) - sigma_t * scale * grad_a f_phi(a_t, s, t).

Three stages, run by one `diffrl train qgpo` (the training loop shows a bar per stage):
1. behaviour: eps_theta of the linear VP-SDE (beta 0.1 -> 20) by denoising score matching,
   L = E_{t ~ U(1e-3, 1)} || eps_theta(alpha_t a + sigma_t z, s, t) - z ||^2 (summed over action
   dimensions); official: batch 4096, lr 1e-4, 600k steps.
2. support actions: M actions per state of the dataset from the behaviour model (unguided
   DPM-Solver), generated once for every s and every s' and cached in the run directory
   (`support.safetensors`, diffrl.data.cache); regenerated when the behaviour weights change
   (a fingerprint is kept).
3. critic + energy, on the same batches (official: 1M steps, Q for the first half only):
   in-support softmax Q-learning (paper eq. 13),
       V(s') = sum_k softmax_k(beta_Q Q'(s', a'_k)) Q'(s', a'_k),  y = r + gamma (1 - d) V(s'),
       L_Q = mean over the twin heads of (Q_i(s, a) - y)^2,  Q' = min of the target heads;
   and Contrastive Energy Prediction (paper eq. 12), K = M support actions per state, one t
   per state shared by its K actions:
       L_f = - sum_k softmax_k(beta Q'(s, a_k)) log softmax_k(f_phi(a_t^k, s, t)),
       a_t^k = alpha_t a_k + sigma_t z_k.
Acting: one action per state by DPM-Solver on eps_guided (singlestep, order 2, 15 evaluations,
uniform time grid, t_end 1e-3, as the official `select_actions`); `guidance_scale` is set at
evaluation time (`diffrl eval RUN --set guidance_scale=3`, or `--sweep guidance_scale=0,1,3`),
and the presets' `eval_sweep=guidance_scale=...` makes every evaluation during training sweep
the scales and report each (the score is the best scale's), as the official train_critic.py.

Where diffrl differs from the official code:
- Actions are mapped affinely from the dataset's bounds to [-1, 1] for the diffusion model and
  the energy model (the identity for D4RL locomotion); the critic sees environment units.
  Support actions and chosen actions are clipped to [-1, 1] (the official code leaves that to
  the environment); the critic therefore scores the actions that would really be executed.
- Optionally (`clip_x0`, off by default as in the official code, on in the toy preset) the
  sampler clamps every x0 estimate (x_t - sigma_t eps) / alpha_t to [-1, 1]. Exact models'
  estimate E[a_0 | a_t] lies in the box already, so the clamp changes nothing where the models
  are right; it stops a large guidance scale from driving samples far outside the data, where
  neither learned model was trained (docs/algorithms/qgpo.md has the toy measurements).
- The support actions of s' reuse those of the next row's s when s' is that state (consecutive
  rows of an episode), so the cache is built for about one state per transition, not two.
- The behaviour network returns eps, where the official one returns the score -eps / sigma_t
  (the same network up to the sign of its last layer); the state/time terms of each residual
  block are computed once per state when several actions share a state.
- The stage lengths are config keys (`behavior_steps`, `steps`, `q_fraction`); the presets
  state what they are for each dataset and why.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from diffrl.algos import AgentBase, BenchWork, DataSpec
from diffrl.algos._compile import CompiledGraphs
from diffrl.config import SAMPLERS, SamplingConfig, doc
from diffrl.data import TransitionBatch, TransitionSampler, make_normalizer
from diffrl.data.cache import ChunkCache
from diffrl.data.normalizers import from_unit_box, refit, to_unit_box
from diffrl.diffusion.factory import make_sampler
from diffrl.diffusion.vpsde import SKIP_TYPES, VPSDE
from diffrl.errors import ConfigError, DiffrlError
from diffrl.nets import TwinQ
from diffrl.nets.score import ScoreResMLP, TimeEnergyMLP
from diffrl.progress import bar as progress_bar

SUPPORT_FILE = "support.safetensors"
SUPPORT_SAVE_SECONDS = 300.0  # how often a long support generation saves its progress
T_MIN = 1e-3  # t ~ U(T_MIN, 1) in both training losses (official `loss_fn`, `update_qt`)


@dataclass(frozen=True)
class Config(SamplingConfig):
    algo: str = doc("qgpo", "algorithm name")
    steps: int = doc(1_600_000, "total gradient steps: behaviour stage + critic/energy stage", ge=1)
    behavior_steps: int = doc(600_000, "steps of the behaviour stage (official: 600k)", ge=0)
    behavior_batch_size: int = doc(4096, "batch size of the behaviour stage", ge=1)
    behavior_lr: float = doc(1e-4, "Adam learning rate of the behaviour model", ge=0)
    behavior_lr_decay: bool = doc(False, "cosine-anneal the behaviour learning rate to 0")
    batch_size: int = doc(256, "batch size of the critic/energy stage")
    critic_lr: float = doc(3e-4, "Adam learning rate of the twin Q", ge=0)
    energy_lr: float = doc(3e-4, "Adam learning rate of the energy model", ge=0)
    q_fraction: float = doc(
        0.5, "Q is trained in this first fraction of the critic stage", ge=0, le=1
    )
    support_actions: int = doc(16, "M, support actions per state (16 locomotion, 32 antmaze)", ge=1)
    support_steps: int = doc(15, "DPM-Solver evaluations per support action (unguided)", ge=1)
    support_chunk: int = doc(256, "states per chunk when generating support actions", ge=1)
    beta: float = doc(3.0, "CEP temperature: pi proportional to mu exp(beta Q)", ge=0)
    beta_q: float | None = doc(None, "softmax temperature of the in-support V (None = beta)", ge=0)
    discount: float = doc(0.99, "gamma", ge=0, le=1)
    tau: float = doc(0.005, "Polyak rate of the critic target", gt=0, le=1)
    hidden: int = doc(256, "width of the critics' and the energy model's hidden layers", ge=1)
    energy_layers: int = doc(4, "hidden layers of the energy model", ge=1)
    guidance_scale: float = doc(1.0, "s: weight of grad f in the guided noise prediction", ge=0)
    sampler: str = doc(
        "dpm-solver",
        "sampler used to act, on the VP-SDE: dpm-solver (official) | ddim | ddpm (ancestral)",
        choices=SAMPLERS,
    )
    sampling_steps: int = doc(
        15, "model evaluations per action when acting (0 = the sampler's default)", ge=0
    )
    solver_order: int = doc(2, "DPM-Solver order (1-3)", ge=1, le=3)
    solver_method: str = doc(
        "singlestep",
        "DPM-Solver method: singlestep | multistep",
        choices=("singlestep", "multistep"),
    )
    solver_skip: str = doc("time_uniform", "DPM-Solver time grid: time_uniform | logSNR")
    t_end: float = doc(1e-3, "DPM-Solver end time", gt=0, le=1)
    clip_x0: bool = doc(
        False, "clamp every x0 estimate of the sampler to [-1, 1] (False: the official sampler)"
    )
    reward_norm: str = doc(
        "return_range",
        "rewards: return_range (r * 1000 / (max - min return)) | none",
        choices=("return_range", "none"),
    )
    obs_norm: str = doc(
        "none",
        "observation normaliser: none | gaussian | limits",
        choices=("none", "gaussian", "limits"),
    )
    compile: bool = doc(True, "torch.compile guided sampling on CPU; eager if it fails")

    # Acting-time keys: `--resume --set` may change them (they leave the model as it is).
    # Before 0.2 the scale sweep had its own key.
    LEGACY_KEYS: ClassVar[dict[str, Any]] = {
        "eval_guidance_scales": lambda v: {"eval_sweep": scale_sweep(v)}
    }
    RESUME_KEYS: ClassVar[frozenset[str]] = SamplingConfig.RESUME_KEYS | {
        "guidance_scale",
        "solver_order",
        "solver_method",
        "solver_skip",
        "t_end",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.behavior_steps <= self.steps:
            raise ConfigError(
                f"need 0 <= behavior_steps <= steps, got {self.behavior_steps}, {self.steps}"
            )
        if self.solver_skip not in SKIP_TYPES:
            raise ConfigError(
                f"config key 'solver_skip' must be one of {SKIP_TYPES}, got {self.solver_skip!r}"
            )


COMPILE_MAX_EVALS = 32  # acting graphs with more model evaluations run eagerly

LOCOMOTION_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0)  # official sweep (train_critic.py)


def scale_sweep(scales: Any) -> str:
    """(0, 1, 3) -> 'guidance_scale=0,1,3' (the `eval_sweep` value); () -> ''."""
    scales = [
        float(x) for x in (scales.split(",") if isinstance(scales, str) else scales) if x != ""
    ]
    return "guidance_scale=" + ",".join(f"{x:g}" for x in scales) if scales else ""


def presets(dataset: str) -> dict[str, Any]:
    """Per-dataset settings: the official ones, or stated where they differ."""
    if dataset == "toy-bandit":
        # The official bandit script trains on 1M points with batch 2048 and uses the true
        # energies; here Q is learned from the dataset's noisy rewards like any other dataset.
        # beta 1: the official toys have energies in [0, 1] with beta 3; this toy's rewards
        # span 0-5, and with beta 3 the learned guidance at scale 10 pushed 99.8 % of samples
        # off the modes at 15 solver steps (measured); beta 1 keeps beta x reward range near
        # the official toys'. The behaviour learning rate is annealed: at a constant 1e-3 the
        # unguided mode shares drifted between checkpoints (16-30 %). Rewards are not rescaled.
        # clip_x0: at scale 10 the unclamped sampler drove samples far outside the action box
        # at mid t (10 x the learned energy gradient, beyond the data both models saw), and
        # 21 % ended off the modes at the box edge; with x0 clamped, 4 % (same checkpoint).
        # Results of this preset: docs/results/qgpo_toy.md.
        return {
            "steps": 7_000,
            "behavior_steps": 4_000,
            "behavior_batch_size": 1024,
            "behavior_lr": 1e-3,
            "behavior_lr_decay": True,
            "beta": 1.0,
            "batch_size": 256,
            "q_fraction": 1.0,
            "reward_norm": "none",
            "guidance_scale": 3.0,
            "eval_sweep": scale_sweep((0.0, 1.0, 3.0, 10.0)),
            "clip_x0": True,
            "eval_every": 3_500,
            "save_every": 1_000,
            "log_every": 100,
        }
    base = dataset.rsplit("-v", 1)[0] if "-v" in dataset else dataset
    if base.startswith(("hopper-", "halfcheetah-", "walker2d-")):
        return {"eval_sweep": scale_sweep(LOCOMOTION_SCALES)}
    return {}


class Agent(AgentBase):
    """QGPO: behaviour noise model + twin Q (+ target) + time-dependent energy model."""

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.sde = VPSDE(0.1, 20.0)
        self.obs_normalizer = make_normalizer(config.obs_norm, None, spec.obs_dim)
        self.register_buffer("action_low", torch.tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(spec.action_high, dtype=torch.float32))
        # Counts energy-model updates; saved with the weights so a reloaded agent knows whether
        # its energy model has been trained (guidance by an untrained f would be noise).
        self.register_buffer("energy_updates", torch.zeros((), dtype=torch.long))
        self.behavior = ScoreResMLP(spec.obs_dim, spec.act_dim)
        self.critic = TwinQ(spec.obs_dim, spec.act_dim, config.hidden, 3, activation=nn.ReLU)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.energy = TimeEnergyMLP(spec.obs_dim, spec.act_dim, config.hidden, config.energy_layers)
        self.behavior_opt = torch.optim.Adam(self.behavior.parameters(), lr=config.behavior_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.energy_opt = torch.optim.Adam(self.energy.parameters(), lr=config.energy_lr)
        self.behavior_sched = (
            torch.optim.lr_scheduler.CosineAnnealingLR(
                self.behavior_opt, T_max=max(config.behavior_steps, 1)
            )
            if config.behavior_lr_decay
            else None
        )
        self.critic_params = list(self.critic.parameters())
        self.critic_target_params = list(self.critic_target.parameters())
        self.guidance_scale = float(config.guidance_scale)
        self.graphs = CompiledGraphs("qgpo", config.compile)
        self.num_updates = 0
        self.reward_scale = 1.0
        self._sampler: TransitionSampler | None = None
        # Built now: a bad sampler setting fails here, before a run starts, and the compiled
        # sampling graphs never have to build one.
        self._samplers: dict[tuple[int, bool], Any] = {
            (config.sampling_steps, False): self.make_sampler(config.sampling_steps),
            (config.support_steps, True): self.make_sampler(config.support_steps, True),
        }
        self._support: torch.Tensor | None = None  # (S, M, A) normalised support actions
        self._support_states: torch.Tensor | None = None  # (S, obs_dim) their states
        self._next_ref: torch.Tensor | None = None  # (N,) row of s' in the support table

    # ------------------------------------------------------------------ stages and data
    def stages(self) -> list[tuple[str, int, int]]:
        c = self.config
        return [
            ("behavior", c.behavior_steps, c.behavior_batch_size),
            ("critic", c.steps - c.behavior_steps, c.batch_size),
        ]

    def fit_normalizers(self, dataset: Any) -> None:
        refit(self.obs_normalizer, self.config.obs_norm, dataset.observations)

    def batch_sampler(self, dataset: Any, device: torch.device) -> TransitionSampler:
        if self.config.reward_norm == "return_range":
            # Official (IQL's locomotion tuning): r * 1000 / (max - min episode return).
            self.reward_scale = dataset.return_range_scale()
        self._sampler = TransitionSampler(
            dataset, device, obs_normalizer=self.obs_normalizer, reward_scale=self.reward_scale
        )
        return self._sampler

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return to_unit_box(action, self.action_low, self.action_high)

    def unnormalize_action(self, x: torch.Tensor) -> torch.Tensor:
        return from_unit_box(x, self.action_low, self.action_high)

    # ------------------------------------------------------------------ sampling
    def guided_eps(
        self, x: torch.Tensor, t: float, obs: torch.Tensor, scale: float | torch.Tensor
    ) -> torch.Tensor:
        """eps_theta(x, s, t) - sigma_t * scale * grad_x f(x, s, t)   (paper eq. 9). (N, A).

        obs has S <= N rows (each state's N / S rows consecutive). The gradient is with
        respect to x only, written out by `TimeEnergyMLP.action_grad` (no autograd graph):
        guidance steers sampling, it is not trained through.
        """
        eps = self.behavior(x, t, obs)
        if isinstance(scale, float) and scale == 0.0:
            return eps
        rep = x.shape[0] // obs.shape[0]
        obs_rows = obs.repeat_interleave(rep, dim=0) if rep > 1 else obs
        return eps - (self.sde.sigma(t) * scale) * self.energy.action_grad(x, t, obs_rows)

    def make_sampler(self, steps: int, unguided_support: bool = False) -> Any:
        """The configured sampler with `steps` model evaluations on the VP-SDE. Support actions
        (`unguided_support`) use the official DPM-Solver whatever the acting sampler is."""
        c = self.config
        return make_sampler(
            "dpm-solver" if unguided_support else c.sampler,
            self.sde,
            steps,
            clip_x0=(-1.0, 1.0) if c.clip_x0 else None,
            eta=c.ddim_eta,
            **(
                {"order": c.solver_order, "method": c.solver_method, "skip": c.solver_skip}
                if unguided_support or c.sampler == "dpm-solver"
                else {}
            ),
            t_end=c.t_end,
        )

    def _solve(
        self,
        obs: torch.Tensor,
        x_T: torch.Tensor,
        scale: Any,
        steps: int,
        generator: torch.Generator | None = None,
        support: bool = False,
    ) -> torch.Tensor:
        key = (steps, support)
        if key not in self._samplers:
            self._samplers[key] = self.make_sampler(steps, support)
        x0 = self._samplers[key].sample(
            lambda x, t: self.guided_eps(x, t, obs, scale), x_T, generator=generator
        )
        return x0.clamp(-1.0, 1.0)

    def _guided_graph(self, obs: torch.Tensor, x_T: torch.Tensor, scale: torch.Tensor):
        return self._solve(obs, x_T, scale, self.config.sampling_steps)

    def _plain_graph(self, obs: torch.Tensor, x_T: torch.Tensor):
        return self._solve(obs, x_T, 0.0, self.config.sampling_steps)

    def _support_graph(self, obs: torch.Tensor, x_T: torch.Tensor):
        return self._solve(obs, x_T, 0.0, self.config.support_steps, support=True)

    def sample(
        self,
        obs: torch.Tensor,
        n: int = 1,
        scale: float = 0.0,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        support: bool = False,
    ) -> torch.Tensor:
        """n actions per state in [-1, 1] (normalised), (S * n, A), each state's n consecutive.

        `support`: unguided support actions by the official DPM-Solver with `support_steps`
        evaluations, whatever the acting sampler. Gradient-free; with `compile`, deterministic
        sampling at the configured step counts runs as one compiled graph (the scale is a
        tensor input, so changing it does not recompile); a stochastic sampler (ddpm, ddim
        with eta > 0) runs eagerly, drawing from `generator`.
        """
        c = self.config
        x_T = torch.randn(
            (obs.shape[0] * n, self.spec.act_dim),
            generator=generator,
            device=obs.device,
            dtype=obs.dtype,
        )
        with torch.no_grad():
            if support:
                if steps not in (None, c.support_steps):
                    return self._solve(obs, x_T, 0.0, steps, support=True)
                return self.graphs.run("support", self._support_graph, obs, x_T)
            steps = steps or c.sampling_steps
            stochastic = c.sampler == "ddpm" or (c.sampler == "ddim" and c.ddim_eta > 0)
            # A compiled graph unrolls every solver step: past a few dozen, compiling costs
            # minutes (measured: 200 DDIM steps did not finish compiling in 5 minutes).
            long = self._samplers[(c.sampling_steps, False)].num_evals > COMPILE_MAX_EVALS
            if steps != c.sampling_steps or stochastic or long:
                return self._solve(obs, x_T, float(scale), steps, generator)
            if scale == 0.0:
                return self.graphs.run("plain", self._plain_graph, obs, x_T)
            s = torch.tensor(float(scale), device=obs.device, dtype=obs.dtype)
            return self.graphs.run("guided", self._guided_graph, obs, x_T, s)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, obs_dim) -> (B, act_dim): one energy-guided sample per state."""
        obs = self.obs_normalizer.normalize(obs)
        scale = self.guidance_scale if int(self.energy_updates) > 0 else 0.0
        return self.unnormalize_action(self.sample(obs, 1, scale, generator=generator))

    def inert_keys(self) -> frozenset[str]:
        """Before the energy model is trained `act` does not guide: every scale acts alike."""
        return frozenset() if int(self.energy_updates) > 0 else frozenset({"guidance_scale"})

    # ------------------------------------------------------------------ support actions
    def _fingerprint(self) -> str:
        """Identifies the behaviour weights and the generation settings of a support table."""
        h = hashlib.sha1()
        for tensor in self.behavior.state_dict().values():
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        c = self.config
        h.update(f"{c.support_actions}|{c.support_steps}|{c.seed}|{c.solver_order}".encode())
        h.update(f"{c.solver_method}|{c.solver_skip}|{c.t_end}|{c.clip_x0}".encode())
        return h.hexdigest()

    def begin_stage(
        self,
        name: str,
        run_dir: str | Path | None = None,
        progress: bool = True,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Called by the training loop before a stage starts or resumes."""
        if name == "critic":
            self.prepare_support(run_dir, progress, stop)

    def prepare_support(
        self,
        run_dir: str | Path | None,
        progress: bool = True,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Load or generate the support actions of every state of the sampler's data.

        States: every s, plus every s' that is not the next row's s. Generation is chunked,
        deterministic per chunk (its own seed) and saved as it goes, so a killed run resumes
        the generation where it stopped. When `stop()` turns True (the run was asked to stop)
        the chunks made so far are saved and the table is left unset.
        """
        if self._sampler is None:
            raise DiffrlError("qgpo: batch_sampler() must be called before the critic stage")
        c, smp = self.config, self._sampler
        obs, next_obs = smp.obs, smp.next_obs
        n = obs.shape[0]
        same = torch.zeros(n, dtype=torch.bool, device=obs.device)
        same[:-1] = (next_obs[:-1] == obs[1:]).all(dim=1)
        extra = torch.nonzero(~same).flatten()
        states = torch.cat([obs, next_obs[extra]])
        next_ref = torch.arange(1, n + 1, device=obs.device)
        next_ref[extra] = n + torch.arange(extra.numel(), device=obs.device)
        self._next_ref = next_ref
        self._support_states = states
        path = Path(run_dir) / SUPPORT_FILE if run_dir is not None else None
        cache = ChunkCache(path, self._fingerprint(), len(states), c.support_chunk)
        chunks, complete = cache.load(obs.device)
        if complete:
            self._support = torch.cat(chunks)
            return
        # One table written in place: keeping ~8,000 small chunks alive between the solver's
        # large temporaries fragmented glibc's heap on hopper-medium-expert (measured: the
        # process grew ~1.7 MiB per 24 KiB chunk kept, 13 GiB by the end; flat in place).
        table = torch.empty(len(states), c.support_actions, self.spec.act_dim, device=obs.device)
        done = sum(len(x) for x in chunks)
        if chunks:
            table[:done] = torch.cat(chunks)
        del chunks
        bar = progress_bar(
            total=cache.num_chunks,
            initial=done // c.support_chunk,
            desc=f"qgpo [support x{c.support_actions}]",
            unit="chunk",
            disable=not progress,
        )
        last_save = time.monotonic()
        was_training = self.training
        self.eval()
        stopped = False
        with torch.no_grad():
            for i in range(done // c.support_chunk, cache.num_chunks):
                if stop is not None and stop():
                    stopped = True
                    break
                part = states[i * c.support_chunk : (i + 1) * c.support_chunk]
                g = torch.Generator(device=obs.device).manual_seed(c.seed * 1_000_003 + i)
                a = self.sample(part, c.support_actions, 0.0, c.support_steps, g, support=True)
                table[done : done + len(part)] = a.view(len(part), c.support_actions, -1)
                done += len(part)
                bar.update(1)
                if time.monotonic() - last_save >= SUPPORT_SAVE_SECONDS:
                    cache.save([table[:done]], complete=False)
                    last_save = time.monotonic()
        bar.close()
        self.train(was_training)
        if stopped:  # saved now, not at the next periodic save; the table stays unset
            cache.save([table[:done]], complete=False)
            return
        self._support = table
        cache.save([table], complete=True)

    def act_as_trained(self) -> None:
        """Act with energy guidance, as after the critic stage (`diffrl bench act`)."""
        if int(self.energy_updates) == 0:
            self.energy_updates += 1

    def bench_work(self, name: str, sampler: TransitionSampler) -> BenchWork | None:
        """For `diffrl bench train`: before the critic stage, support-action generation on the
        sampler's first states; the table is then filled with uniform actions (the update's
        cost does not depend on their values)."""
        if name != "critic":
            return None
        c = self.config
        states = sampler.obs[: c.support_chunk]

        def stand_in() -> None:
            rows = sampler.obs.shape[0]
            self._support = torch.rand(rows + 1, c.support_actions, self.spec.act_dim) * 2 - 1
            self._next_ref = torch.arange(1, rows + 1)

        return BenchWork(
            label="support",
            run=lambda: self.sample(states, c.support_actions, 0.0, c.support_steps, support=True),
            items=len(states),
            unit="states",
            stand_in=stand_in,
            info={
                "actions_per_state": c.support_actions,
                "evaluations_per_action": c.support_steps,
            },
        )

    # ------------------------------------------------------------------ training
    def update(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        if self.num_updates < c.behavior_steps:
            out = self._behavior_update(batch)
        else:
            out = self._critic_update(batch)
        self.num_updates += 1
        return out

    def _behavior_update(self, batch: TransitionBatch) -> dict[str, float]:
        """Denoising score matching on dataset actions (official `loss_fn`)."""
        a = self.normalize_action(batch.action)
        t = torch.rand(a.shape[0], device=a.device) * (1.0 - T_MIN) + T_MIN
        z = torch.randn_like(a)
        a_t = self.sde.q_sample(a, t, z)
        loss = (self.behavior(a_t, t, batch.obs) - z).pow(2).sum(dim=1).mean()
        self.behavior_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.behavior_opt.step()
        if self.behavior_sched is not None:
            self.behavior_sched.step()
        return {"behavior_loss": loss.item()}

    def _critic_update(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        if self._support is None or self._next_ref is None or batch.index is None:
            raise DiffrlError("qgpo: the critic stage needs the support actions (begin_stage)")
        metrics: dict[str, float] = {}
        support = self._support[batch.index]  # (B, M, A), normalised
        critic_steps = c.steps - c.behavior_steps
        if self.num_updates - c.behavior_steps < c.q_fraction * critic_steps:
            metrics.update(self._q_update(batch, self._support[self._next_ref[batch.index]]))
        metrics.update(energy_loss=self._energy_update(batch, support))
        self.energy_updates += 1
        return metrics

    def _q_update(self, batch: TransitionBatch, next_support: torch.Tensor) -> dict[str, float]:
        """In-support softmax Q-learning (paper eq. 13)."""
        c = self.config
        beta_q = c.beta if c.beta_q is None else c.beta_q
        b, m, _ = next_support.shape
        with torch.no_grad():
            next_obs = batch.next_obs.repeat_interleave(m, dim=0)
            q_next = self.critic_target.q_min(
                next_obs, self.unnormalize_action(next_support.reshape(b * m, -1))
            ).view(b, m)
            v_next = (F.softmax(beta_q * q_next, dim=1) * q_next).sum(dim=1, keepdim=True)
            target = batch.reward + batch.not_done * c.discount * v_next
        q1, q2 = self.critic(batch.obs, batch.action)
        loss = 0.5 * (F.mse_loss(q1, target) + F.mse_loss(q2, target))
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.critic_target_params, self.critic_params, c.tau)
        return {"critic_loss": loss.item(), "target_q": target.mean().item()}

    def _energy_update(self, batch: TransitionBatch, support: torch.Tensor) -> float:
        """Contrastive Energy Prediction (paper eq. 12) with the target critic's Q."""
        c = self.config
        b, m, a_dim = support.shape
        obs_rows = batch.obs.repeat_interleave(m, dim=0)
        flat = support.reshape(b * m, a_dim)
        with torch.no_grad():
            q = self.critic_target.q_min(obs_rows, self.unnormalize_action(flat)).view(b, m)
        t = torch.rand(b, device=flat.device) * (1.0 - T_MIN) + T_MIN
        t_rows = t.repeat_interleave(m)  # one t per state, shared by its M actions
        a_t = self.sde.q_sample(flat, t_rows, torch.randn_like(flat))
        f = self.energy(a_t, t_rows, obs_rows).view(b, m)
        loss = cep_loss(f, q, c.beta)
        self.energy_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.energy_opt.step()
        return loss.item()

    def compiles(self, device: torch.device) -> bool:
        return self.graphs.enabled and device.type == "cpu"

    # ------------------------------------------------------------------ state
    def train_state_dict(self) -> dict[str, Any]:
        return {
            "behavior_opt": self.behavior_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "energy_opt": self.energy_opt.state_dict(),
            "behavior_sched": self.behavior_sched.state_dict() if self.behavior_sched else None,
            "num_updates": self.num_updates,
        }

    def load_train_state_dict(self, state: dict[str, Any]) -> None:
        self.behavior_opt.load_state_dict(state["behavior_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.energy_opt.load_state_dict(state["energy_opt"])
        if self.behavior_sched is not None and state.get("behavior_sched"):
            self.behavior_sched.load_state_dict(state["behavior_sched"])
        self.num_updates = int(state["num_updates"])


def cep_loss(f: torch.Tensor, q: torch.Tensor, beta: float) -> torch.Tensor:
    """L = -mean_s sum_k softmax_k(beta q) log softmax_k(f)   (paper eq. 12). f, q: (B, K)."""
    return -(F.softmax(beta * q, dim=1) * F.log_softmax(f, dim=1)).sum(dim=1).mean()
