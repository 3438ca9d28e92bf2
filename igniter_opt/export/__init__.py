"""Exporting a plan for platforms other than ``igniter-opt apply``: Kubernetes (``igniter-opt export k8s``).

See ``k8s.py`` for the export and docs/k8s.md for what it writes and why.
"""
