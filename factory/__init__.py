"""State Factory: synthetic data that teaches small models to obey an injected STATE block."""

__version__ = "0.1.0"
