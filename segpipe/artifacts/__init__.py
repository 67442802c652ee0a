"""Typed artifacts on disk: plan.json, the prepared folder, checkpoints and the model folder."""
