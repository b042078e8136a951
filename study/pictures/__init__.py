"""Pictures at the end of a run: what the trained model of the ladder's last stage predicts.

After the ladder, the stage runner starts one more child process (`python -m study.stage --pass
pictures`) on the last stage that finished ok. It loads that stage's checkpoint, runs it over the
validation batches the metric used, and writes into reports/<run>/: the confusion matrix and a
Grad-CAM grid (classification; for a model with attention estimators, `attend(x)`, also attention.png,
each estimator's map over the pictures) or a grid of picture | trimap | prediction with per-class IoU
(segmentation), plus `pictures.json` for the report; the grids also go to TensorBoard, beside the
stage's scalars in profiles/<run>/<stage>/.

This module is torch-free (the parent and the report import it); the work is in `make` (torch) and
the drawing in `draw` (numpy, matplotlib).
"""
from __future__ import annotations

PICTURES_FILE = "pictures.json"
PASS_NAME = "pictures"
CAM_PICTURES = 8  # validation pictures in the Grad-CAM grid
SEGMENT_PICTURES = 4  # rows of the segmentation grid
