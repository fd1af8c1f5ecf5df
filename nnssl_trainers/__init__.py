"""nnUNetTrainer subclasses that fine-tune nnssl-pretrained encoders inside released nnU-Net v2."""
