//! The co-engagement neighbours in a two-tower model file, after the weights: per item with
//! neighbours its id (u64) and their count (u32), by id; then every neighbour (u64 id, f32
//! similarity), item by item, best first. The header gives both counts (`neighbors.items`,
//! `neighbors.entries`; absent: none).

use coldstart_models::two_tower::Neighbors;

/// Appends `nb` to `out`; its (items, entries).
pub(crate) fn write(out: &mut Vec<u8>, nb: &Neighbors) -> (usize, usize) {
    let rows = nb.rows();
    for (id, v) in &rows {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    let mut entries = 0;
    for (_, v) in &rows {
        for (j, s) in v.iter() {
            out.extend_from_slice(&j.to_le_bytes());
            out.extend_from_slice(&s.to_le_bytes());
        }
        entries += v.len();
    }
    (rows.len(), entries)
}

/// The bytes `items` and `entries` take (`None`: more than can be).
pub(crate) fn len(items: usize, entries: usize) -> Option<usize> {
    items.checked_mul(12)?.checked_add(entries.checked_mul(12)?)
}

/// Reads what [`write`] wrote, `b` exactly [`len`] bytes long.
pub(crate) fn read(b: &[u8], items: usize, entries: usize) -> Result<Neighbors, String> {
    let (heads, rest) = b.split_at(items * 12);
    let mut rows = Vec::with_capacity(items);
    let mut counts = Vec::with_capacity(items);
    let mut last: Option<u64> = None;
    for h in heads.chunks_exact(12) {
        let id = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        if last.is_some_and(|l| l >= id) {
            return Err("the neighbours' items are not sorted and distinct".into());
        }
        last = Some(id);
        counts.push(u32::from_le_bytes(h[8..].try_into().expect("4 bytes")) as usize);
        rows.push(id);
    }
    if counts.iter().sum::<usize>() != entries {
        return Err("the neighbour counts disagree with `neighbors.entries`".into());
    }
    let mut it = rest.chunks_exact(12).map(|c| {
        (
            u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
            f32::from_le_bytes(c[8..].try_into().expect("4 bytes")),
        )
    });
    let mut out = Vec::with_capacity(items);
    for (id, n) in rows.into_iter().zip(counts) {
        let v: Vec<(u64, f32)> = it.by_ref().take(n).collect();
        if v.iter().any(|x| !x.1.is_finite()) {
            return Err(format!("a neighbour similarity of item {id} is not finite"));
        }
        out.push((id, v));
    }
    Ok(Neighbors::from_rows(out))
}
