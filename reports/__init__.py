"""Renderers: each takes a finished Report and returns text; the CLI writes it."""
