"""Preprocessing: transpose, crop to nonzero, normalise, resample; storage of training-ready cases."""
