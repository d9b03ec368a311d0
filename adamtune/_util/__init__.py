"""Layer 0: small helpers with no adamtune imports (lazy exports, URLs, YAML files)."""
