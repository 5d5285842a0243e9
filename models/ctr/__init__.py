"""CTR ranking family: field-indexed data, LR/FM/DeepFM/DCNv2/SSR models, training, calibration, ONNX export.

See docs/results/ctr.md for the measured results and models/ctr/export.py for the serving contract.
"""
