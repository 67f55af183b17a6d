"""The ground floor: settings, city configuration, logging, units and shared constants.

Every other layer may import from here; nothing here imports any other part of transfertraj
(docs/architecture.md; tests/test_architecture.py enforces it).
"""
