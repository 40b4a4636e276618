"""Declaration of the `lwf` method (to be written)."""
