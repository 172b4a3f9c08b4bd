"""CPU inference backends for the sliding window's network forward (ONNX Runtime, OpenVINO); see `choice.py`."""
