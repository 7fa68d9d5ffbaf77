"""aidoctor: a diagnostic doctor for Linux hosts that load and serve AI models."""

__version__ = "0.1.0"
