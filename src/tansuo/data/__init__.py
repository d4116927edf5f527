"""Behaviour and catalogue data: schema, import, cleaning, store, bundled datasets."""
