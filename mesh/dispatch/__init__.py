"""Dispatch: the console, the live activation watcher and the terminal tables."""
