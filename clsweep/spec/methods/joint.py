"""Declaration of the `joint` method (to be written)."""
