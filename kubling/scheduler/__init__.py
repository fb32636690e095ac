"""kubling.scheduler."""
