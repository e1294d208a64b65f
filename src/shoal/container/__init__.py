"""Runs inside every container process. Imports :mod:`shoal.protocol`, never the control plane."""
