"""JAX-on-CPU reference for the Fashion-MNIST MLP (784-256-128-10, ReLU, Adam 1e-3, batch 128,
last partial batch dropped, jax.jit step): prints median epoch time, samples/s and test
accuracy as one JSON line. Run through benches/jax_mlp.sh, which also times lockstep.
Environment: HIDDEN (default "256,128"), BATCH (default 128), MAX_STEPS (stop each epoch after
that many steps; then samples/s is over those steps)."""
import gzip, json, os, struct, sys, time
import numpy as np
import jax, jax.numpy as jnp

D = os.environ.get("FASHION_DIR", "/usr/share/datasets/fashion-mnist")
def idx(name):
    with gzip.open(os.path.join(D, name)) as f:
        b = f.read()
    magic, n = struct.unpack(">II", b[:8])
    if magic == 0x803:
        r, c = struct.unpack(">II", b[8:16])
        return np.frombuffer(b, np.uint8, offset=16).reshape(n, r * c).astype(np.float32) / 255.0
    return np.frombuffer(b, np.uint8, offset=8).astype(np.int32)

xtr, ytr = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")
xte, yte = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")
mean, std = xtr.mean(), xtr.std()
xtr, xte = (xtr - mean) / std, (xte - mean) / std
key = jax.random.PRNGKey(42)
HIDDEN = [int(h) for h in os.environ.get("HIDDEN", "256,128").split(",")]
BATCH = int(os.environ.get("BATCH", "128"))
MAX_STEPS = int(os.environ.get("MAX_STEPS", "0"))
def init(key, sizes=(784, *HIDDEN, 10)):
    ps = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        key, k = jax.random.split(key)
        bound = (6.0 / a) ** 0.5
        ps.append((jax.random.uniform(k, (a, b), minval=-bound, maxval=bound), jnp.zeros(b)))
    return ps
def forward(ps, x):
    for w, b in ps[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = ps[-1]
    return x @ w + b
def loss(ps, x, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(forward(ps, x)), y[:, None], 1))
@jax.jit
def step(ps, m, v, t, x, y):
    g = jax.grad(loss)(ps, x, y)
    m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
    v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
    c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
    ps = jax.tree_util.tree_map(lambda p, m, v: p - 1e-3 * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), ps, m, v)
    return ps, m, v
ps = init(key)
m = jax.tree_util.tree_map(jnp.zeros_like, ps)
v = jax.tree_util.tree_map(jnp.zeros_like, ps)
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
rng = np.random.default_rng(0)
times, t = [], 0
for e in range(epochs):
    perm = rng.permutation(len(xtr))
    t0 = time.perf_counter()
    steps = len(xtr) // BATCH if MAX_STEPS == 0 else min(MAX_STEPS, len(xtr) // BATCH)
    for i in range(steps):
        idxs = perm[i * BATCH:(i + 1) * BATCH]
        t += 1
        ps, m, v = step(ps, m, v, t, xtr[idxs], ytr[idxs])
    jax.block_until_ready(ps)
    times.append(time.perf_counter() - t0)
acc = float(jnp.mean(jnp.argmax(forward(ps, xte), 1) == yte))
med = sorted(times[1:] or times)[len(times[1:] or times) // 2]
print(json.dumps({"median_epoch_s": med, "samples_per_s": steps * BATCH / med, "steps_per_s": steps / med, "test_accuracy": acc, "epochs": epochs}))
