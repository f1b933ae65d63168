"""Training until the checks pass: recipes, data, the loop and the verifier-only methods."""
