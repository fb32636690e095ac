"""kubling.api."""
