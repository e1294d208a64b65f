"""Shoal's benchmarks: the workloads named in the issues, each beside a baseline from the same run.

Run ``python -m benchmarks [NAME ...] [--quick]`` from the repository root.
"""
