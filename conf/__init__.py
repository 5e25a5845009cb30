"""Hydra configuration files shipped with metals."""
