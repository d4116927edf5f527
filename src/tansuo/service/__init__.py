"""The real-time recommendation service: engine, HTTP API, API keys."""
