"""Writing predictions: masks and probabilities in the input's form, DICOM-SEG, RT-STRUCT."""
