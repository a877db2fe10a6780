"""Seeds: load and validate state templates (seeds/*.yaml) and expand them into concrete states.

The template language is documented in seeds/README.md.
"""

from factory.seeds.expand import expand
from factory.seeds.load import load_worlds
from factory.seeds.validate import validate_template

__all__ = ["expand", "load_worlds", "validate_template"]
