"""Interest models behind one protocol: fit, score, recommend, save, load."""
