"""Self-expressive clustering methods, one file each."""
