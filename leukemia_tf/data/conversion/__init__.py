"""The converter's parts, run by leukemia_tf/data/convert.py: the per-image work of its
worker processes (encode), the rules of its output folder (output_dir) and bounded
parallel reading and hashing of its inputs (streaming). None imports TensorFlow.
"""
