"""Writes tiny_pt.safetensors, read by weights::tests::reads_file_written_by_python_safetensors.

Run from this folder with `pip install safetensors numpy` (tested with safetensors 0.8.0,
numpy 2.4): python3 make_safetensors.py

The tensors mimic a PyTorch state_dict of conv1 (Conv2d(1, 2, 3)), bn1 (BatchNorm2d(2)) and
fc (Linear(8, 3)). Tensor k of the list holds arange(n) * 0.5 + k; fc.weight is stored as F16
and fc.bias as F64 to exercise the conversions; num_batches_tracked is a 0-d int64 (937).
"""
import numpy as np
from safetensors.numpy import save_file

specs = [
    ("conv1.weight", (2, 1, 3, 3), np.float32),
    ("conv1.bias", (2,), np.float32),
    ("bn1.weight", (2,), np.float32),
    ("bn1.bias", (2,), np.float32),
    ("bn1.running_mean", (2,), np.float32),
    ("bn1.running_var", (2,), np.float32),
    ("bn1.num_batches_tracked", (), np.int64),
    ("fc.weight", (3, 8), np.float16),
    ("fc.bias", (3,), np.float64),
]
tensors = {}
for k, (name, shape, dtype) in enumerate(specs):
    if dtype == np.int64:
        tensors[name] = np.array(937, dtype=np.int64)
    else:
        n = int(np.prod(shape))
        tensors[name] = (np.arange(n) * 0.5 + k).astype(dtype).reshape(shape)
save_file(tensors, "tiny_pt.safetensors", metadata={"format": "pt", "model": "tiny"})
