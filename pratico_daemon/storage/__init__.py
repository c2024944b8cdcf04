"""Storage behind small protocols (see protocols.py); `open_stores` picks the implementations."""
