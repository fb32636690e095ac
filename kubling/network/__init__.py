"""kubling.network."""
