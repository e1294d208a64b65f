"""User apps the integration tests run, each a module a container imports by name."""
