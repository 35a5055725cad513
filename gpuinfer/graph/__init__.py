"""Loading ONNX models into the graph the planner and executor use."""
