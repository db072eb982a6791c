"""Hydra command-line entry points."""
