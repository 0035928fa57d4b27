"""cosmotrain: data-parallel training of cosmology deep-learning models."""
__version__ = "0.1.0"
