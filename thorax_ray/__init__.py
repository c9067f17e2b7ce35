"""thorax-ray."""
