"""diffrl: diffusion models for decision making (offline RL, online RL, planning)."""

__version__ = "0.1.0"
