"""In-memory stand-ins for the outside world, for unit tests."""
