"""The service: a long-lived server with deployed apps, sessions, durable spawns."""
