"""GUI tests (opt-in: pytest -m gui); a package so its conftest does not shadow tests/conftest.py."""
