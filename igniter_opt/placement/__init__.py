"""The placement kernel."""
