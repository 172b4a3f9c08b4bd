"""Raw datasets: image I/O with geometry, dataset.json, case listing, integrity checks, splits."""
