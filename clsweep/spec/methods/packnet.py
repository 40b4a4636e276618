"""Declaration of the `packnet` method (to be written)."""
