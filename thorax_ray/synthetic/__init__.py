"""Synthetic ChestX-ray14-like data: procedural chest radiographs with findings and boxes."""
