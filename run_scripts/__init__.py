"""Launchers and report scripts; run each as ``python -m run_scripts.<name>`` from the repository root."""
