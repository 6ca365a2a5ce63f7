"""Image sources, one module per format, and the registry that picks one for a file."""
