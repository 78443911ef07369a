"""Data-parallel training on torch.distributed: the group of ranks and its launcher."""
