"""What the caller holds: apps, function handles, calls in flight, maps."""
