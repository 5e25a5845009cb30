"""The METALS study: grid presets, label-efficiency measures and the results page."""
