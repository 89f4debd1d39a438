"""The plugin dispatch-core discovers by entry point."""
