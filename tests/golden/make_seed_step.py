"""Golden data for one SGD training step of the seed model, computed independently with numpy
in float64: forward, cross-entropy loss (mean), backward by hand, then theta -= 0.1 * grad.

Inputs: seed_weights.safetensors and seed_input.npy (from make_seed_golden.py).
Writes seed_labels.npy (32 labels as float32), seed_step_weights.safetensors (weights after the
step) and seed_step_loss.npy (the loss before the step). Run: python3 make_seed_step.py
"""
import numpy as np
from safetensors.numpy import load_file, save_file

w = {k: v.astype(np.float64) for k, v in load_file("seed_weights.safetensors").items()}
x = np.load("seed_input.npy").astype(np.float64)
n = x.shape[0]
labels = np.random.default_rng(7).integers(0, 10, size=n)


def conv_fwd(x, wt, b, pad):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = wt.shape[2]
    oh, ow = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    y = np.zeros((x.shape[0], wt.shape[0], oh, ow))
    for u in range(k):
        for v in range(k):
            y += np.einsum("ncij,oc->noij", xp[:, :, u:u + oh, v:v + ow], wt[:, :, u, v])
    return y + b[None, :, None, None], xp


def conv_bwd(dy, xp, wt, pad):
    k = wt.shape[2]
    oh, ow = dy.shape[2], dy.shape[3]
    dw = np.zeros_like(wt)
    dxp = np.zeros_like(xp)
    for u in range(k):
        for v in range(k):
            dw[:, :, u, v] = np.einsum("noij,ncij->oc", dy, xp[:, :, u:u + oh, v:v + ow])
            dxp[:, :, u:u + oh, v:v + ow] += np.einsum("noij,oc->ncij", dy, wt[:, :, u, v])
    db = dy.sum(axis=(0, 2, 3))
    return dxp[:, :, pad:-pad, pad:-pad], dw, db


def pool_fwd(x):
    n, c, h, wd = x.shape
    r = x.reshape(n, c, h // 2, 2, wd // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, wd // 2, 4)
    idx = r.argmax(axis=-1)  # first maximum, as PyTorch
    return r.max(axis=-1), idx


def pool_bwd(dy, idx, shape):
    n, c, h, wd = shape
    onehot = np.eye(4)[idx] * dy[..., None]  # n c h/2 w/2 4
    return onehot.reshape(n, c, h // 2, wd // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(shape)


# forward
c1, x1p = conv_fwd(x, w["conv1.0.weight"], w["conv1.0.bias"], 2)
r1 = np.maximum(c1, 0)
p1, i1 = pool_fwd(r1)
c2, x2p = conv_fwd(p1, w["conv2.0.weight"], w["conv2.0.bias"], 2)
r2 = np.maximum(c2, 0)
c3, x3p = conv_fwd(r2, w["conv2.2.weight"], w["conv2.2.bias"], 2)
r3 = np.maximum(c3, 0)
p3, i3 = pool_fwd(r3)
c4, x4p = conv_fwd(p3, w["conv3.0.weight"], w["conv3.0.bias"], 2)
r4 = np.maximum(c4, 0)
f = r4.reshape(n, -1)
z = f @ w["out.weight"].T + w["out.bias"]
m = z.max(axis=1, keepdims=True)
lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
loss = np.mean(lse - z[np.arange(n), labels])

# backward
p = np.exp(z - lse[:, None])
dz = p.copy()
dz[np.arange(n), labels] -= 1
dz /= n
g = {"out.weight": dz.T @ f, "out.bias": dz.sum(axis=0)}
df = dz @ w["out.weight"]
dr4 = df.reshape(r4.shape) * (c4 > 0)
dp3, g["conv3.0.weight"], g["conv3.0.bias"] = conv_bwd(dr4, x4p, w["conv3.0.weight"], 2)
dr3 = pool_bwd(dp3, i3, r3.shape) * (c3 > 0)
dr2, g["conv2.2.weight"], g["conv2.2.bias"] = conv_bwd(dr3, x3p, w["conv2.2.weight"], 2)
dr2 = dr2 * (c2 > 0)
dp1, g["conv2.0.weight"], g["conv2.0.bias"] = conv_bwd(dr2, x2p, w["conv2.0.weight"], 2)
dr1 = pool_bwd(dp1, i1, r1.shape) * (c1 > 0)
_, g["conv1.0.weight"], g["conv1.0.bias"] = conv_bwd(dr1, x1p, w["conv1.0.weight"], 2)

new = {k: (w[k] - 0.1 * g[k]).astype(np.float32) for k in w}
np.save("seed_labels.npy", labels.astype(np.float32))
np.save("seed_step_loss.npy", np.array([loss], dtype=np.float64))
save_file(new, "seed_step_weights.safetensors", metadata={"format": "pt"})
print("loss", loss, "max |grad|", max(np.abs(v).max() for v in g.values()))
