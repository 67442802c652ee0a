"""segpipe: a brain-tumour segmentation pipeline built on MONAI."""

__version__ = "0.1.0"
