//! Exact maximum-inner-product search over a flat store of vectors: the search the two-tower
//! channel runs over the new-item pools. Vectors are kept row-major in one buffer; a search
//! scores blocks of rows against every query with one matrix product per block (`gemm`), keeps
//! each query's best `k` with a threshold and partial selection, and splits the rows over
//! scoped threads. Exact, so it needs no training and no recall trade-off: a pool holds the new
//! items of at most 30 days, which is what exhaustive search is for.

use crate::{Error, Result};
use nalgebra::{DMatrix, DMatrixView};
use std::ops::Range;

/// Rows scored per matrix product: the `BLOCK × queries` scores stay in cache for selection.
const BLOCK: usize = 2048;

/// From this many queries a search scores blocks as `Qᵀ X` rather than `Xᵀ Q`.
const MANY_QUERIES: usize = 8;

/// Vectors and their ids, in insertion order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlatIndex {
    dim: usize,
    data: Vec<f32>,
    ids: Vec<u64>,
}

/// One query's best hits, best first: (id, inner product).
pub type Hits = Vec<(u64, f32)>;

impl FlatIndex {
    /// An empty index of vectors of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            data: Vec::new(),
            ids: Vec::new(),
        }
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of row `i`.
    pub fn id(&self, i: usize) -> u64 {
        self.ids[i]
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Adds a vector; one of the wrong length or with a NaN or infinity is refused.
    pub fn push(&mut self, id: u64, v: &[f32]) -> Result<()> {
        check(v, self.dim)?;
        self.data.extend_from_slice(v);
        self.ids.push(id);
        Ok(())
    }

    /// Inserts a vector at row `at`, shifting the rows after it.
    pub fn insert(&mut self, at: usize, id: u64, v: &[f32]) -> Result<()> {
        check(v, self.dim)?;
        let at = at.min(self.len());
        self.data
            .splice(at * self.dim..at * self.dim, v.iter().copied());
        self.ids.insert(at, id);
        Ok(())
    }

    /// Removes row `i`.
    pub fn remove(&mut self, i: usize) {
        self.data.drain(i * self.dim..(i + 1) * self.dim);
        self.ids.remove(i);
    }

    /// Removes the first `n` rows (at most all), in one move.
    pub fn remove_first(&mut self, n: usize) {
        let n = n.min(self.len());
        self.data.drain(..n * self.dim);
        self.ids.drain(..n);
    }

    /// Replaces row `i`'s vector.
    pub fn set(&mut self, i: usize, v: &[f32]) -> Result<()> {
        check(v, self.dim)?;
        self.data[i * self.dim..(i + 1) * self.dim].copy_from_slice(v);
        Ok(())
    }

    /// The `k` rows of `rows` with the highest inner product with each query (`queries`
    /// row-major, `dim` each), best first, ties to the lower row; rows split over `threads`
    /// (0: every core).
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        rows: Range<usize>,
        threads: usize,
    ) -> Result<Vec<Hits>> {
        if self.dim == 0 || !queries.len().is_multiple_of(self.dim) {
            return Err(Error::DimensionMismatch {
                left: queries.len(),
                right: self.dim,
            });
        }
        if let Some(i) = queries.iter().position(|x| !x.is_finite()) {
            return Err(Error::NotFinite { index: i });
        }
        let nq = queries.len() / self.dim;
        let rows = rows.start.min(self.len())..rows.end.min(self.len());
        if nq == 0 || k == 0 || rows.is_empty() {
            return Ok(vec![Vec::new(); nq]);
        }
        let workers = crate::kmeans::threads(threads)
            .min(rows.len().div_ceil(BLOCK))
            .max(1);
        let per = rows.len().div_ceil(workers);
        let parts: Vec<Range<usize>> = (0..workers)
            .map(|w| rows.start + w * per..(rows.start + (w + 1) * per).min(rows.end))
            .collect();
        let tops: Vec<Vec<Top>> = if workers == 1 {
            vec![self.scan(queries, nq, k, rows)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = parts
                    .into_iter()
                    .map(|r| s.spawn(move || self.scan(queries, nq, k, r)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a search thread does not panic"))
                    .collect()
            })
        };
        let mut out = Vec::with_capacity(nq);
        for q in 0..nq {
            let mut all = Top::new(k);
            for t in &tops {
                for &(s, r) in &t[q].buf {
                    all.offer(s, r);
                }
            }
            out.push(
                all.finish()
                    .into_iter()
                    .map(|(s, r)| (self.ids[r], s))
                    .collect(),
            );
        }
        Ok(out)
    }

    /// Scores `rows` block by block against every query and keeps each query's best `k`. A
    /// few queries go as `Xᵀ q` (matrix-vector shaped: fast for one); many as one `Qᵀ X` per
    /// block (a product with both sides wide, which the kernel runs several times faster).
    fn scan(&self, queries: &[f32], nq: usize, k: usize, rows: Range<usize>) -> Vec<Top> {
        let d = self.dim;
        let q = DMatrixView::from_slice(queries, d, nq);
        let mut tops: Vec<Top> = (0..nq).map(|_| Top::new(k)).collect();
        let block = BLOCK.min(rows.len());
        let mut start = rows.start;
        if nq < MANY_QUERIES {
            let mut scores = DMatrix::<f32>::zeros(block, nq);
            while start < rows.end {
                let b = BLOCK.min(rows.end - start);
                let x = DMatrixView::from_slice(&self.data[start * d..(start + b) * d], d, b);
                let mut out = scores.rows_mut(0, b);
                out.gemm_tr(1.0, &x, &q, 0.0); // b × nq: a column per query
                for (top, col) in tops.iter_mut().zip(out.column_iter()) {
                    for (j, &s) in col.iter().enumerate() {
                        if s > top.floor {
                            top.offer(s, start + j);
                        }
                    }
                }
                start += b;
            }
        } else {
            let qt = q.transpose();
            let mut scores = DMatrix::<f32>::zeros(nq, block);
            while start < rows.end {
                let b = BLOCK.min(rows.end - start);
                let x = DMatrixView::from_slice(&self.data[start * d..(start + b) * d], d, b);
                let mut out = scores.columns_mut(0, b);
                out.gemm(1.0, &qt, &x, 0.0); // nq × b: a column per row
                for (j, col) in out.column_iter().enumerate() {
                    for (top, &s) in tops.iter_mut().zip(col.iter()) {
                        if s > top.floor {
                            top.offer(s, start + j);
                        }
                    }
                }
                start += b;
            }
        }
        tops
    }
}

fn check(v: &[f32], dim: usize) -> Result<()> {
    if v.len() != dim {
        return Err(Error::DimensionMismatch {
            left: v.len(),
            right: dim,
        });
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::NotFinite { index: i });
    }
    Ok(())
}

/// The best `k` (score, row) pairs seen so far: candidates above `floor` are buffered; when the
/// buffer holds `2k` it is cut back to the best `k` and `floor` rises to the k-th score.
struct Top {
    k: usize,
    floor: f32,
    buf: Vec<(f32, usize)>,
}

/// Higher score first, then the lower row.
fn better(a: &(f32, usize), b: &(f32, usize)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

impl Top {
    fn new(k: usize) -> Self {
        Self {
            k,
            floor: f32::NEG_INFINITY,
            buf: Vec::with_capacity(2 * k),
        }
    }

    fn offer(&mut self, s: f32, row: usize) {
        self.buf.push((s, row));
        if self.buf.len() >= 2 * self.k {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.buf.len() > self.k {
            self.buf.select_nth_unstable_by(self.k - 1, better);
            self.buf.truncate(self.k);
            // rows are offered in ascending order, so a later row that ties the floor loses
            // the tie to the kept one: `> floor` is exact
            self.floor = self.buf.iter().map(|x| x.0).fold(f32::INFINITY, f32::min);
        }
    }

    fn finish(mut self) -> Vec<(f32, usize)> {
        self.cut();
        self.buf.sort_unstable_by(better);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn brute(idx: &FlatIndex, q: &[f32], k: usize, rows: Range<usize>) -> Hits {
        let mut all: Vec<(f32, usize)> = rows
            .map(|r| (idx.row(r).iter().zip(q).map(|(a, b)| a * b).sum(), r))
            .collect();
        all.sort_by(better);
        all.truncate(k);
        all.into_iter().map(|(s, r)| (idx.id(r), s)).collect()
    }

    fn random(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn search_is_exact_over_blocks_threads_and_ranges() {
        let d = 8;
        let mut idx = FlatIndex::new(d);
        let data = random(5000, d, 1);
        for (i, v) in data.chunks(d).enumerate() {
            idx.push(1000 + i as u64, v).unwrap();
        }
        let queries = random(7, d, 2);
        for (threads, k, rows) in [
            (1, 10, 0..5000),
            (2, 100, 0..5000),
            (2, 5, 123..4321),
            (1, 3, 4990..5000),
        ] {
            let got = idx.search(&queries, k, rows.clone(), threads).unwrap();
            for (qi, q) in queries.chunks(d).enumerate() {
                let want = brute(&idx, q, k, rows.clone());
                let ids = |h: &Hits| h.iter().map(|x| x.0).collect::<Vec<_>>();
                assert_eq!(
                    ids(&got[qi]),
                    ids(&want),
                    "threads {threads} k {k} rows {rows:?}"
                );
            }
        }
    }

    #[test]
    fn bad_vectors_and_queries_are_refused() {
        let mut idx = FlatIndex::new(3);
        assert!(matches!(
            idx.push(1, &[1.0, 2.0]),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(matches!(
            idx.push(1, &[1.0, f32::NAN, 0.0]),
            Err(Error::NotFinite { index: 1 })
        ));
        idx.push(1, &[1.0, 0.0, 0.0]).unwrap();
        assert!(idx.search(&[1.0, 0.0], 1, 0..1, 1).is_err());
        assert!(idx.search(&[1.0, f32::INFINITY, 0.0], 1, 0..1, 1).is_err());
        assert_eq!(
            idx.search(&[0.0, 1.0, 0.0], 0, 0..1, 1).unwrap(),
            vec![Vec::new()]
        );
        assert_eq!(idx.len(), 1, "nothing of a refused vector was kept");
    }

    #[test]
    fn rows_can_be_inserted_replaced_and_removed() {
        let mut idx = FlatIndex::new(2);
        idx.push(1, &[1.0, 0.0]).unwrap();
        idx.push(3, &[0.0, 1.0]).unwrap();
        idx.insert(1, 2, &[0.5, 0.5]).unwrap();
        assert_eq!((0..3).map(|i| idx.id(i)).collect::<Vec<_>>(), [1, 2, 3]);
        idx.set(1, &[2.0, 2.0]).unwrap();
        assert_eq!(idx.search(&[1.0, 1.0], 1, 0..3, 1).unwrap()[0][0].0, 2);
        idx.remove(1);
        assert_eq!(idx.row(1), &[0.0, 1.0]);
    }
}
