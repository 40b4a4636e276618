"""Declaration of the `independent` method (to be written)."""
