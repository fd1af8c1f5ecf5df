"""Crop, resample (nnU-Net's functions), normalize and store cases in nnU-Net's blosc2 layout."""
