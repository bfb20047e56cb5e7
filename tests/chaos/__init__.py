"""The chaos suite: storage faults, concurrent writers, serving under stress (`pytest -m chaos`).

A package, unlike tests/, so that its conftest.py is `chaos.conftest` and never hides tests/conftest.py.
"""
