"""Representations: image/text encoders, relative representations and zero-shot stitching."""
