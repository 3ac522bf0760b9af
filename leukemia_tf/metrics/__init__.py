"""Numbers from scores and labels, without TensorFlow: classification metrics, patient-level
calls, calibration and the roles of splits."""
