"""pratico-daemon: one Trio process that owns every live learning room."""

__version__ = "0.1.0"
