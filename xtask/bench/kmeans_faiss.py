"""FAISS side of `cargo xtask bench kmeans`: trains spherical k-means on the same points with the
same thread count, and assigns points to coldstart's centroids, for a same-run comparison.
Prints one line `BENCH {json}`."""
import json
import sys
import time

import faiss
import numpy as np

out, d, k, iterations, threads, seed = sys.argv[1], *map(int, sys.argv[2:7])
faiss.omp_set_num_threads(threads)
x = np.fromfile(f"{out}/points.f32", dtype="<f4").reshape(-1, d)
ours = np.fromfile(f"{out}/centroids.f32", dtype="<f4").reshape(-1, d)
n = x.shape[0]

# every point takes part: FAISS subsamples above max_points_per_centroid * k by default
km = faiss.Kmeans(d, k, niter=iterations, spherical=True, seed=seed,
                  max_points_per_centroid=n // k + 1, verbose=False)
t = time.perf_counter()
km.train(x)
train_s = time.perf_counter() - t

index = faiss.IndexFlatIP(d)
index.add(km.centroids)
sims, _ = index.search(x, 1)
objective = float(sims.mean())

# assignment on coldstart's centroids: one call, and batches of 1000. One item at a time is not
# timed: from Python it would measure a Python call per item as much as FAISS
index = faiss.IndexFlatIP(d)
index.add(ours)
t = time.perf_counter()
index.search(x, 1)
all_per_s = n / (time.perf_counter() - t)
batch_n = min(n, 200_000)
t = time.perf_counter()
for s in range(0, batch_n, 1000):
    index.search(x[s:s + 1000], 1)
batch_per_s = batch_n / (time.perf_counter() - t)

print("BENCH " + json.dumps({
    "impl": "faiss " + faiss.__version__, "train_s": train_s, "objective": objective,
    "assign_all_per_s": all_per_s, "assign_batch1000_per_s": batch_per_s,
}))
