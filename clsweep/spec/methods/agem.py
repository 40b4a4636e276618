"""Declaration of the `agem` method (to be written)."""
