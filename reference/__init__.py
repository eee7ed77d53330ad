"""Independent references that the tests and bench/ compare the toolkit's results against (not installed)."""
