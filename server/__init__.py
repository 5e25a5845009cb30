"""metals.server package."""
