"""metals.client package."""
