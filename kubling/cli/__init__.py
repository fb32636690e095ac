"""kubling.cli."""
