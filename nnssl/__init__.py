"""nnssl: self-supervised pretraining for 3D CT, plugged into nnU-Net v2."""

__version__ = "0.1.0"
