"""Bundled zoo models (package data): ``NAME.json`` + ``NAME.safetensors`` + ``NAME.md``."""
