"""Plumbing with no domain in it, importable from every layer: `tracking` (the one door to MLflow tracking)
and `network` (which hosts only this machine reaches). It imports libraries and `tasks.secrets` only."""
