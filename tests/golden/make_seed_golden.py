"""Golden data for the seed model, computed independently of cnn with numpy in float64.

Writes seed_weights.safetensors (PyTorch state_dict names and layouts, PyTorch's default
initialisation bounds U(-1/sqrt(fan_in), 1/sqrt(fan_in))), seed_input.npy (32 x 1 x 28 x 28) and
seed_logits.npy (32 x 10). Run from this folder: python3 make_seed_golden.py
Requires numpy and safetensors (pip install numpy safetensors).
"""
import numpy as np
from safetensors.numpy import save_file

rng = np.random.default_rng(20261129)


def uniform(shape, fan_in):
    b = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-b, b, size=shape).astype(np.float32)


def conv_params(cin, cout, k):
    fan_in = cin * k * k
    return uniform((cout, cin, k, k), fan_in), uniform((cout,), fan_in)


w = {}
for name, cin, cout in [("conv1.0", 1, 16), ("conv2.0", 16, 32), ("conv2.2", 32, 32), ("conv3.0", 32, 64)]:
    w[name + ".weight"], w[name + ".bias"] = conv_params(cin, cout, 5)
w["out.weight"] = uniform((10, 3136), 3136)
w["out.bias"] = uniform((10,), 3136)
x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)


def conv2d(x, weight, bias, pad):
    # Direct definition: y[n,o,i,j] = b[o] + sum_{c,u,v} x_pad[n,c,i+u,j+v] * w[o,c,u,v]
    n, c, h, wd = x.shape
    o, _, k, _ = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - k + 1, wd + 2 * pad - k + 1
    y = np.zeros((n, o, oh, ow))
    for u in range(k):
        for v in range(k):
            patch = xp[:, :, u:u + oh, v:v + ow]  # n c oh ow
            y += np.einsum("ncij,oc->noij", patch, weight[:, :, u, v].astype(np.float64))
    return y + bias.astype(np.float64)[None, :, None, None]


def maxpool2(x):
    n, c, h, wd = x.shape
    return x[:, :, : h // 2 * 2, : wd // 2 * 2].reshape(n, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))


relu = lambda t: np.maximum(t, 0.0)
h = x.astype(np.float64)
h = maxpool2(relu(conv2d(h, w["conv1.0.weight"], w["conv1.0.bias"], 2)))
h = relu(conv2d(h, w["conv2.0.weight"], w["conv2.0.bias"], 2))
h = maxpool2(relu(conv2d(h, w["conv2.2.weight"], w["conv2.2.bias"], 2)))
h = relu(conv2d(h, w["conv3.0.weight"], w["conv3.0.bias"], 2))
h = h.reshape(32, -1)
logits = h @ w["out.weight"].astype(np.float64).T + w["out.bias"].astype(np.float64)

save_file(w, "seed_weights.safetensors", metadata={"format": "pt"})
np.save("seed_input.npy", x)
np.save("seed_logits.npy", logits.astype(np.float32))
print("logits[0] =", logits[0])
