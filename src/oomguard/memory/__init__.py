"""Memory measurement: the host, the sampler thread, the budget and the engine's meter."""
