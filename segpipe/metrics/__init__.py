"""Segmentation metrics shared by validation during training and by the reports."""
