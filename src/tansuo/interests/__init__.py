"""Interest identification: profiles, multi-interest clusters, tags, evolution, segments."""
