"""Declaration of the `si` method (to be written)."""
