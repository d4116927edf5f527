"""Text: item and query text encoded into one vector space."""
