"""CTR ranking service (SSR and dense baselines) over ONNX."""
