"""kubling.client."""
