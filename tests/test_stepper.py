"""The one environment stepper: episodes, autoreset, goals, and what agents are told."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrl.errors import DiffrlError
from diffrl.evaluate import eval_goals, rollouts
from diffrl.stepper import EnvStepper


def test_episodes_match_stepping_each_environment_by_hand():
    """n environments in lock-step give what n separate environments give."""
    import gymnasium as gym

    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(40, 3, 1)).astype(np.float32)
    with EnvStepper("Pendulum-v1", 3, seed=5) as stepper:
        obs0 = stepper.reset().copy()
        rewards = []
        for a in actions:
            rewards.append(stepper.step(a).reward)
    for i in range(3):
        env = gym.make("Pendulum-v1")
        first, _ = env.reset(seed=5 + i)
        np.testing.assert_array_equal(obs0[i], first.astype(np.float32))
        for t, a in enumerate(actions):
            _, r, *_ = env.step(a[i])
            assert r == rewards[t][i]


def test_autoreset_keeps_the_final_observation_and_the_episode_totals():
    with EnvStepper("Pendulum-v1", 2, seed=0, autoreset=True, max_episode_steps=5) as stepper:
        stepper.reset()
        total = np.zeros(2)
        for _ in range(5):
            before = stepper.obs.copy()
            step = stepper.step(np.zeros((2, 1), np.float32))
            total += step.reward
            assert step.index.tolist() == [0, 1]  # autoreset: every environment keeps running
        assert step.truncated.all() and not step.terminated.any()
        np.testing.assert_allclose(step.episode_return, total)
        assert step.episode_length.tolist() == [5, 5]
        # obs is the new episode's first observation, final_obs where the old one ended
        assert not np.array_equal(step.obs, step.final_obs)
        assert stepper.episode_length.tolist() == [0, 0]
        assert not np.array_equal(before, step.final_obs)
        with pytest.raises(DiffrlError, match="2 environments are running but 1 actions"):
            stepper.step(np.zeros((1, 1), np.float32))


class _Recorder:
    """An agent that records what the stepper hands it (goals, episode resets)."""

    def __init__(self) -> None:
        self.goals: list[np.ndarray] = []
        self.carries: list[list[int]] = []
        self.batches: list[int] = []

    def act(self, obs: torch.Tensor, generator=None) -> torch.Tensor:
        self.batches.append(obs.shape[0])
        return torch.zeros(obs.shape[0], 2)

    def act_goal(self, obs: torch.Tensor, goal: torch.Tensor, generator=None) -> torch.Tensor:
        if goal is not None:
            self.goals.append(goal.numpy().copy())
        return self.act(obs, generator)

    def reset_episodes(self, carry: np.ndarray) -> None:
        self.carries.append(np.asarray(carry).tolist())


def test_goal_conditioned_agent_receives_the_goal_and_goals_can_be_set():
    pytest.importorskip("gymnasium_robotics")
    agent = _Recorder()
    goals = np.array([[0.5, 0.5], [-0.25, 1.0]])
    returns, lengths = rollouts(
        agent, "PointMaze_UMaze-v3", 2, 0, torch.device("cpu"), torch.Generator(), goals=goals
    )
    assert lengths == [300, 300]  # PointMaze's time limit
    np.testing.assert_allclose(agent.goals[0], goals, atol=1e-6)
    np.testing.assert_allclose(agent.goals[-1], goals, atol=1e-6)
    # the environment's own goal when none is set
    own = _Recorder()
    rollouts(own, "PointMaze_UMaze-v3", 1, 0, torch.device("cpu"), torch.Generator())
    assert own.goals[0].shape == (1, 2) and not np.allclose(own.goals[0], goals[:1])


def test_episodic_agent_is_told_when_episodes_end():
    """Hopper episodes end at different times; the agent learns which rows carry on."""
    agent = _Recorder()
    agent.act = lambda obs, generator=None: (  # type: ignore[method-assign]
        agent.batches.append(obs.shape[0]) or torch.full((obs.shape[0], 3), 1.0)
    )
    _, lengths = rollouts(agent, "Hopper-v5", 3, 0, torch.device("cpu"), torch.Generator())
    assert agent.carries[0] == [-1, -1, -1]  # all new at the start
    shrinks = agent.carries[1:]
    assert len(shrinks) >= 1 and all(-1 not in c for c in shrinks)
    # the batch sizes follow the episodes still running
    assert agent.batches[0] == 3 and agent.batches[-1] == 1
    assert sum(agent.batches) == sum(lengths)


def test_eval_goal_values():
    class C:
        dataset = "maze2d-umaze-v0"
        eval_goal = "dataset"

    goals = eval_goals(C(), {"eval_goal": [1.0, 2.0]}, 3)
    assert goals.shape == (3, 2) and goals[2].tolist() == [1.0, 2.0]
    with pytest.raises(DiffrlError, match="names no evaluation goal"):
        eval_goals(C(), {}, 3)
    C.eval_goal = "1,x"
    with pytest.raises(DiffrlError, match=r"eval_goal must be '', 'dataset' or numbers"):
        eval_goals(C(), {}, 3)
    C.eval_goal = ""
    assert eval_goals(C(), {}, 3) is None
