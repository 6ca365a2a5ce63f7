"""The only tornado code: the application factory and thin handlers."""
