"""Splat renderer: EWA projection, tile binning and sorting, rasterisation dispatch (pallas | xla)."""
