"""The control plane: per-function pools, their queues, dispatch and autoscaling."""
