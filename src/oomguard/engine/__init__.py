"""The memory engine: microbatch split and accumulation, OOM recovery, the probe and the Guard."""
