"""autoseg.training."""
