"""kubling.apiserver."""
