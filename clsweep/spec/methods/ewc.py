"""Declaration of the `ewc` method (to be written)."""
