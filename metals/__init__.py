"""Federated active learning for IoT intrusion detection on Flower."""

__version__ = "0.1.0"
