"""kubling.node."""
