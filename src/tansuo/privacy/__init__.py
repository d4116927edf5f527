"""Privacy by design: pseudonymisation, retention, erasure, differential privacy, audit."""
