"""autoseg.networks."""
