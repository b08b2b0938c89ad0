"""Does a QGPO run's energy model follow its critic? On random dataset states: the spread of the
target critic's Q over each state's support actions, the entropy of the CEP target
softmax(beta Q) against log M, and the within-state correlation of the energy f(a_t, t, s) with Q.

    DIFFRL_DATA=... python benchmarks/qgpo_energy_vs_q.py RUN_DIR [STATES]

RUN_DIR must hold its support table (support.safetensors, made by the critic stage).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from diffrl.api import load, load_dataset


def main(run_dir: str, states: int = 512) -> None:
    torch.manual_seed(0)
    run = load(run_dir)
    agent = run.agent
    data = load_dataset(run.config.dataset)
    support = load_file(str(Path(run_dir) / "support.safetensors"))["rows"]
    idx = torch.randint(0, len(data.observations), (states,))
    obs = torch.as_tensor(data.observations[idx.numpy()], dtype=torch.float32)
    s = support[idx]  # (B, M, A), normalised; row i of the table is dataset row i's state
    b, m, a = s.shape
    with torch.no_grad():
        rows = obs.repeat_interleave(m, 0)
        q = agent.critic_target.q_min(rows, agent.unnormalize_action(s.reshape(-1, a))).view(b, m)
        p = torch.softmax(agent.config.beta * q, 1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1).mean()
        print(f"Q: mean {q.mean():.2f}, within-state std {q.std(1).mean():.3f}")
        print(f"CEP target entropy {entropy:.3f} (log M = {math.log(m):.3f})")
        o = agent.obs_normalizer.normalize(rows)
        for t in (0.01, 0.1, 0.5):
            f = agent.energy(s.reshape(-1, a), torch.full((b * m,), t), o).view(b, m)
            fc, qc = f - f.mean(1, keepdim=True), q - q.mean(1, keepdim=True)
            corr = (fc * qc).sum() / (fc.norm() * qc.norm())
            print(f"t={t}: energy within-state std {f.std(1).mean():.4f}, corr(f, Q) {corr:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(x) for x in sys.argv[2:3]))
