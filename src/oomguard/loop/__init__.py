"""The training loop: a small function, one State object, callbacks per event."""
