"""Declaration of the `er` method (to be written)."""
