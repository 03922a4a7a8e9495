"""Request/response models that cross service boundaries, one module per service contract (all under /v1)."""
