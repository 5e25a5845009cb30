"""metals.common package."""
