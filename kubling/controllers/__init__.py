"""kubling.controllers."""
