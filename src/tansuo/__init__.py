"""Tansuo (探索): learn, follow and explore shoppers' interests; serve explained recommendations."""

__version__ = "0.1.0"
