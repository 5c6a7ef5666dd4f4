"""The version, in one place: pyproject.toml reads it from here, and it sits in the base layer so every
layer can name it without importing the package's front door (`evowatt/__init__.py`)."""

__version__ = "0.1.0"
