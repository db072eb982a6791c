"""Backbones (timm), heads and decoders."""
