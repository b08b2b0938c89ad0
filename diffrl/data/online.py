"""Online data: a replay buffer on the training device, filled by stepping environments with
the current policy; the training loop draws batches from it as from an offline sampler.

Data flow of an online run (`diffrl train ALGO --env ENV_ID`): before each update the source
steps the environments `env_steps_per_update` times (uniform random actions for the first
`warmup_steps` environment steps, then the agent's exploration actions), writes the
transitions to the buffer and returns a batch drawn uniformly from it. The buffer is saved with
every checkpoint and restored on resume; the environments cannot be saved, so an episode cut by
a stop starts again from a fresh reset.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from diffrl.data.samplers import TransitionBatch
from diffrl.errors import DiffrlError


class ReplayBuffer:
    """A ring buffer of transitions held as tensors on `device`, writable in place.

    Rows 0 .. size-1 are filled; `ptr` is the next row written. Batches carry `index`, the rows
    they came from. `columns` {name: key} adds per-row values an algorithm keeps beside the
    transitions, each starting as a copy of transition key `key` when its row is written and
    rewritable through `buffer.columns[name][rows]` (DIPO's diffusion memory:
    {"best_action": "action"}, its Q-improved actions written back); batches carry them in
    `extra`.
    """

    KEYS = ("obs", "action", "reward", "next_obs", "not_done")

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        capacity: int,
        device: torch.device,
        columns: Mapping[str, str] | None = None,
    ) -> None:
        if capacity < 1:
            raise DiffrlError(f"buffer_size must be >= 1, got {capacity}")
        self.capacity, self.device = int(capacity), torch.device(device)
        self.obs = torch.zeros(capacity, obs_dim, device=self.device)
        self.action = torch.zeros(capacity, act_dim, device=self.device)
        self.reward = torch.zeros(capacity, 1, device=self.device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=self.device)
        self.not_done = torch.zeros(capacity, 1, device=self.device)
        self.sources = dict(columns or {})
        for name, key in self.sources.items():
            if key not in self.KEYS or name in self.KEYS:
                raise DiffrlError(
                    f"replay column {name!r} must start from one of {', '.join(self.KEYS)} and "
                    f"not replace one (got {key!r})"
                )
        self.columns = {n: torch.zeros_like(getattr(self, k)) for n, k in self.sources.items()}
        self.size = 0
        self.ptr = 0

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
    ) -> None:
        """Append k transitions (arrays with k rows); not_done = 0 where `terminated` (pass
        terminated | truncated to treat time-limit ends as terminal)."""
        k = len(obs)
        rows = (self.ptr + np.arange(k)) % self.capacity
        idx = torch.as_tensor(rows, device=self.device)

        def put(x: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, np.float32), device=self.device)

        self.obs[idx] = put(obs)
        self.action[idx] = put(action)
        self.reward[idx] = put(reward).view(k, 1)
        self.next_obs[idx] = put(next_obs)
        self.not_done[idx] = 1.0 - put(terminated).view(k, 1)
        for name, key in self.sources.items():
            self.columns[name][idx] = getattr(self, key)[idx]
        self.ptr = int((self.ptr + k) % self.capacity)
        self.size = min(self.size + k, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TransitionBatch:
        """B transitions drawn uniformly with replacement from the filled rows."""
        if self.size == 0:
            raise DiffrlError("the replay buffer is empty: nothing to sample")
        idx = torch.randint(self.size, (batch_size,), device=self.device, generator=generator)
        return TransitionBatch(
            obs=self.obs[idx],
            action=self.action[idx],
            reward=self.reward[idx],
            next_obs=self.next_obs[idx],
            not_done=self.not_done[idx],
            index=idx,
            extra={name: col[idx] for name, col in self.columns.items()} or None,
        )

    def state_dict(self) -> dict[str, Any]:
        """The filled rows (tensors) and the write position: what a checkpoint stores."""
        out: dict[str, Any] = {k: getattr(self, k)[: self.size] for k in self.KEYS}
        out.update({f"column/{n}": col[: self.size] for n, col in self.columns.items()})
        out.update(size=self.size, ptr=self.ptr, capacity=self.capacity)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise DiffrlError(
                f"the checkpoint's replay buffer holds {size:,} transitions, more than "
                f"buffer_size {self.capacity:,}"
            )
        for key in self.KEYS:
            getattr(self, key)[:size] = torch.as_tensor(state[key]).to(self.device)
        for name, key in self.sources.items():
            # A column the checkpoint lacks starts again from its transition key.
            saved = state.get(f"column/{name}", state[key])
            self.columns[name][:size] = torch.as_tensor(saved).to(self.device)
        self.size, self.ptr = size, int(state["ptr"])

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        device: torch.device,
        columns: Mapping[str, str] | None = None,
        capacity: int | None = None,
    ) -> ReplayBuffer:
        """A buffer holding an offline dataset's transitions (rows without a next observation
        left out; timeouts bootstrap): an online algorithm's batches from a fixed dataset."""
        valid = np.asarray(dataset.next_valid, bool)
        n = int(valid.sum())
        buf = cls(
            int(dataset.obs_dim), int(dataset.act_dim), capacity or max(n, 1), device, columns
        )
        buf.add(
            dataset.observations[valid],
            dataset.actions[valid],
            dataset.rewards[valid],
            dataset.next_observations[valid],
            dataset.terminals[valid],
        )
        return buf


class OnlineSource:
    """Batches for the training loop from environments stepped with the current policy.

    config keys used: env_id, seed, buffer_size, warmup_steps, env_steps_per_update, num_envs,
    truncated_terminal. `columns`: the buffer's extra per-row columns (`ReplayBuffer`).
    """

    def __init__(
        self,
        policy: Callable[[torch.Tensor, torch.Tensor | None, Any], torch.Tensor],
        config: Any,
        spec: Any,
        device: torch.device,
        columns: Mapping[str, str] | None = None,
    ) -> None:
        from diffrl.stepper import EnvStepper

        # policy(obs, goal or None, generator) -> actions: the loop passes the agent's
        # exploration actions (diffrl.algos.explore_on), so data/ needs no algorithm contract.
        self.policy, self.config, self.device = policy, config, torch.device(device)
        self.buffer = ReplayBuffer(
            spec.obs_dim, spec.act_dim, config.buffer_size, device, columns=columns
        )
        self.stepper = EnvStepper(config.env_id, config.num_envs, seed=config.seed, autoreset=True)
        self.low = torch.tensor(spec.action_low, dtype=torch.float32)
        self.high = torch.tensor(spec.action_high, dtype=torch.float32)
        self.env_steps = 0
        self.episodes = 0
        self.recent: deque[float] = deque(maxlen=10)  # the last episodes' returns
        self.truncated_terminal = bool(config.truncated_terminal)
        self._started = False

    # ------------------------------------------------------------------ collection
    def _start(self) -> None:
        # A fresh episode in every environment; after a resume, seeded by where the run is so
        # a resumed run does not replay the episodes it has already seen.
        n = self.stepper.n
        self.stepper.reset(seeds=[self.config.seed + self.env_steps + i for i in range(n)])
        self._started = True

    def _actions(self, generator: torch.Generator | None) -> np.ndarray:
        n = self.stepper.n
        if self.env_steps < self.config.warmup_steps:
            device = generator.device if generator is not None else torch.device("cpu")
            u = torch.rand((n, self.low.numel()), generator=generator, device=device).cpu()
            return (self.low + u * (self.high - self.low)).numpy()
        obs = torch.as_tensor(self.stepper.obs, device=self.device)
        goal = self.stepper.goal
        goal_t = None if goal is None else torch.as_tensor(goal, device=self.device)
        return self.policy(obs, goal_t, generator).detach().cpu().numpy()

    def collect(self, steps: int, generator: torch.Generator | None = None) -> None:
        """Step every environment `steps` times and store the transitions."""
        if not self._started:
            self._start()
        for _ in range(steps):
            obs = self.stepper.obs.copy()
            actions = self._actions(generator)
            out = self.stepper.step(actions)
            # Gymnasium tells a time-limit truncation from a termination: the target bootstraps
            # through it unless the config asks for the older convention (done = terminal).
            ends = out.terminated | out.truncated if self.truncated_terminal else out.terminated
            self.buffer.add(obs, actions, out.reward, out.final_obs, ends)
            self.env_steps += len(out.index)
            for j in np.flatnonzero(out.done):
                self.episodes += 1
                self.recent.append(float(out.episode_return[j]))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TransitionBatch:
        """Collect (the warm-up first, then `env_steps_per_update` steps), then a batch."""
        c = self.config
        if self.env_steps < c.warmup_steps:
            per_call = self.stepper.n
            self.collect(-(-(c.warmup_steps - self.env_steps) // per_call), generator)
        self.collect(c.env_steps_per_update, generator)
        return self.buffer.sample(batch_size, generator)

    def progress(self) -> dict[str, float]:
        """For the progress bar and metrics: environment steps, episodes, recent return."""
        out: dict[str, float] = {"env_steps": self.env_steps, "episodes": self.episodes}
        if self.recent:
            out["episode_return"] = float(np.mean(self.recent))
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "buffer": self.buffer.state_dict(),
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "recent": list(self.recent),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.env_steps = int(state["env_steps"])
        self.episodes = int(state["episodes"])
        self.recent = deque((float(x) for x in state["recent"]), maxlen=10)
        self._started = False  # the next collection starts fresh episodes

    def close(self) -> None:
        self.stepper.close()
