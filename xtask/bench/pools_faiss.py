"""FAISS side of `cargo xtask bench pools`: IndexFlatIP over the same pool vectors, searched with
the same queries one at a time and in batches, with the same thread count. Prints one line
`BENCH {json}`, with the share of coldstart's top ids (first 100 queries) that FAISS returns too.
One query at a time is a Python call per query; at ~2 ms per exhaustive search of 200,000 x 64
vectors that call's overhead (microseconds) is below 1% of the time measured."""
import json
import sys
import time

import faiss
import numpy as np

out, d, k, batch, threads = sys.argv[1], *map(int, sys.argv[2:6])
faiss.omp_set_num_threads(threads)
pool = np.fromfile(f"{out}/pool.f32", dtype="<f4").reshape(-1, d)
queries = np.fromfile(f"{out}/queries.f32", dtype="<f4").reshape(-1, d)
index = faiss.IndexFlatIP(d)
index.add(pool)
index.search(queries[:1], k)  # warm-up

t = time.perf_counter()
single = [index.search(queries[i:i + 1], k)[1][0] for i in range(len(queries))]
single_qps = len(queries) / (time.perf_counter() - t)
t = time.perf_counter()
for s in range(0, len(queries), batch):
    index.search(queries[s:s + batch], k)
batch_qps = len(queries) / (time.perf_counter() - t)

ours = np.fromfile(f"{out}/ours.u64", dtype="<u8").reshape(-1, k)
agree = np.mean([len(set(ours[i]) & set(single[i])) / k for i in range(len(ours))])
print("BENCH " + json.dumps({
    "impl": "faiss " + faiss.__version__, "single_qps": single_qps, "batch_qps": batch_qps,
    "agreement": float(agree),
}))
