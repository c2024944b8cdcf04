"""Room actors (room.py), their registry (registry.py) and encode-once broadcasts."""
