"""The relay's public address: a fixed PUBLIC_BASE_URL or a tunnel, and the probe that checks it."""
