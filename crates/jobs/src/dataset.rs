//! Data sets in the import format (DESIGN.md §5): `items`, `events` and `users` as Parquet files
//! (one file, or a folder of them), read with every column checked against the schema, and the
//! conversion of MovieLens 100k (`../shared/data/README.md`) into that format.

use crate::{Error, Result};
use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::{Event, LoggedEvent, User};
use coldstart_contracts::types::Action;
use coldstart_runtime::parquet_io;
use coldstart_runtime::ServiceResult;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The Parquet files of `path`: itself, or the `.parquet` files of a folder in name order.
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    parquet_files_but(path, None)
}

/// [`parquet_files`], leaving out the files of a folder whose name ends with `skip`.
fn parquet_files_but(path: &Path, skip: Option<&str>) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::Input {
        file: path.to_path_buf(),
        message: format!("not a Parquet file or a folder of them: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .filter(|p| skip.is_none_or(|s| !p.to_string_lossy().ends_with(s)))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Input {
            file: path.to_path_buf(),
            message: "no .parquet files in this folder".into(),
        });
    }
    Ok(files)
}

/// Reads rows of one import table from `path`, naming the file (and the batch's first row number
/// in the file) of any problem.
fn read<T>(
    path: &Path,
    table: &str,
    decode: impl Fn(&arrow::record_batch::RecordBatch) -> ServiceResult<Vec<T>>,
) -> Result<Vec<T>> {
    read_files(parquet_files(path)?, table, decode)
}

fn read_files<T>(
    files: Vec<PathBuf>,
    table: &str,
    decode: impl Fn(&arrow::record_batch::RecordBatch) -> ServiceResult<Vec<T>>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for f in files {
        let batches = parquet_io::read_all(&f).map_err(|e| Error::Input {
            file: f.clone(),
            message: format!("not a readable Parquet file: {e}"),
        })?;
        let mut offset = 0usize;
        for b in batches {
            // a located error counts its row over the whole file
            let rows = decode(&b).map_err(|e| Error::Input {
                file: f.clone(),
                message: format!(
                    "does not match the `{table}` import schema: {}",
                    e.shift_row(offset).text()
                ),
            })?;
            offset += b.num_rows();
            out.extend(rows);
        }
    }
    Ok(out)
}

/// Items in the `items` import format.
pub fn read_items(path: &Path) -> Result<Vec<Item>> {
    read(path, "items", Item::from_batch)
}

/// Events in the `events` import format.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    read(path, "events", Event::from_batch)
}

/// Users in the `users` import format.
pub fn read_users(path: &Path) -> Result<Vec<User>> {
    read(path, "users", User::from_batch)
}

/// Events for training: an `events` file, or a profile partition's event log folder (its
/// `-users.parquet` files left out). Only the events are read; the item metadata the log keeps
/// beside them is left empty, as mining does not use it.
pub fn read_training_events(path: &Path) -> Result<Vec<LoggedEvent>> {
    let files = parquet_files_but(path, Some("-users.parquet"))?;
    Ok(read_files(files, "events", Event::from_batch)?
        .into_iter()
        .map(|event| LoggedEvent {
            event,
            item_publish_ts: 0,
            category: String::new(),
            keywords: vec![],
        })
        .collect())
}

/// A whole data set.
#[derive(Debug, Default, Clone)]
pub struct Dataset {
    /// Items.
    pub items: Vec<Item>,
    /// Events.
    pub events: Vec<Event>,
    /// Users.
    pub users: Vec<User>,
}

impl Dataset {
    /// Reads the three tables.
    pub fn read(items: &Path, events: &Path, users: &Path) -> Result<Self> {
        Ok(Self {
            items: read_items(items)?,
            events: read_events(events)?,
            users: read_users(users)?,
        })
    }

    /// Writes the three tables as `{dir}/items.parquet`, `events.parquet`, `users.parquet`.
    pub fn write(&self, dir: &Path, image_dim: usize) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let w = |name: &str, b: arrow::record_batch::RecordBatch| {
            let path = dir.join(name);
            parquet_io::write_atomic(&path, &[b]).map_err(|source| Error::Write { path, source })
        };
        w("items.parquet", Item::to_batch(&self.items, image_dim))?;
        w("events.parquet", Event::to_batch(&self.events))?;
        w("users.parquet", User::to_batch(&self.users))
    }
}

/// Reads a recbole atomic file: a header of `name:type` columns, then tab-separated rows.
fn read_atomic(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Input {
        file: path.to_path_buf(),
        message: format!("{e} (fetch MovieLens 100k as ../shared/data/README.md says)"),
    })?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| Error::Input {
            file: path.to_path_buf(),
            message: "empty file".into(),
        })?
        .split('\t')
        .map(|h| h.split(':').next().unwrap_or(h).to_string())
        .collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    Ok((header, rows))
}

fn col(path: &Path, header: &[String], name: &str) -> Result<usize> {
    header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| Error::Input {
            file: path.to_path_buf(),
            message: format!("no column `{name}` in {header:?}"),
        })
}

fn field<'a>(path: &Path, row: &'a [String], i: usize, line: usize) -> Result<&'a str> {
    row.get(i).map(String::as_str).ok_or_else(|| Error::Input {
        file: path.to_path_buf(),
        message: format!("row {line}: column {i} is missing"),
    })
}

fn parse<T: std::str::FromStr>(path: &Path, v: &str, what: &str, line: usize) -> Result<T> {
    v.trim().parse().map_err(|_| Error::Input {
        file: path.to_path_buf(),
        message: format!("row {line}: `{what}` {v:?} is not a number"),
    })
}

/// The MovieLens-1M age buckets, applied to MovieLens 100k's ages.
fn age_bucket(age: u32) -> &'static str {
    match age {
        0..=17 => "under-18",
        18..=24 => "18-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=49 => "45-49",
        50..=55 => "50-55",
        _ => "56+",
    }
}

/// Converts MovieLens 100k (`ml-100k.inter`, `.item`, `.user` from the recbole wheel) into the
/// import format as `../shared/data/README.md` maps it: publish_ts = an item's first rating,
/// category = its first genre, keywords = all genres, title = title and year; `like` for a rating
/// of 4 or more, else `click`; signup_ts = a user's first rating; region = first digit of the zip
/// code; age buckets as in MovieLens 1M.
pub fn movielens(dir: &Path) -> Result<Dataset> {
    let inter = dir.join("ml-100k.inter");
    let (h, rows) = read_atomic(&inter)?;
    let (cu, ci, cr, ct) = (
        col(&inter, &h, "user_id")?,
        col(&inter, &h, "item_id")?,
        col(&inter, &h, "rating")?,
        col(&inter, &h, "timestamp")?,
    );
    let mut events = Vec::with_capacity(rows.len());
    for (line, r) in rows.iter().enumerate() {
        let rating: f32 = parse(&inter, field(&inter, r, cr, line)?, "rating", line)?;
        let secs: f64 = parse(&inter, field(&inter, r, ct, line)?, "timestamp", line)?;
        events.push(Event {
            user_id: parse(&inter, field(&inter, r, cu, line)?, "user_id", line)?,
            item_id: parse(&inter, field(&inter, r, ci, line)?, "item_id", line)?,
            ts: (secs * 1000.0) as i64,
            action: if rating >= 4.0 {
                Action::Like
            } else {
                Action::Click
            },
            dwell_ms: None,
            request_id: None,
        });
    }
    let mut first: HashMap<u64, i64> = HashMap::new();
    let mut first_user: HashMap<u64, i64> = HashMap::new();
    for e in &events {
        let t = first.entry(e.item_id).or_insert(e.ts);
        *t = (*t).min(e.ts);
        let t = first_user.entry(e.user_id).or_insert(e.ts);
        *t = (*t).min(e.ts);
    }
    let item_file = dir.join("ml-100k.item");
    let (h, rows) = read_atomic(&item_file)?;
    let (ii, it, iy, ic) = (
        col(&item_file, &h, "item_id")?,
        col(&item_file, &h, "movie_title")?,
        col(&item_file, &h, "release_year")?,
        col(&item_file, &h, "class")?,
    );
    let mut items = Vec::new();
    for (line, r) in rows.iter().enumerate() {
        let id: u64 = parse(&item_file, field(&item_file, r, ii, line)?, "item_id", line)?;
        let Some(&publish_ts) = first.get(&id) else {
            continue; // never rated: never published in this history
        };
        let genres: Vec<String> = r
            .get(ic)
            .map(|g| g.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        items.push(Item {
            item_id: id,
            publish_ts,
            author_id: None,
            category: genres.first().cloned().unwrap_or_else(|| "unknown".into()),
            keywords: genres,
            title: format!(
                "{} {}",
                r.get(it).map(String::as_str).unwrap_or(""),
                r.get(iy).map(String::as_str).unwrap_or("")
            )
            .trim()
            .to_string(),
            body: None,
            image_vec: None,
            quality: None,
            author_quality: None,
        });
    }
    let user_file = dir.join("ml-100k.user");
    let (h, rows) = read_atomic(&user_file)?;
    let (uu, ua, ug, uo, uz) = (
        col(&user_file, &h, "user_id")?,
        col(&user_file, &h, "age")?,
        col(&user_file, &h, "gender")?,
        col(&user_file, &h, "occupation")?,
        col(&user_file, &h, "zip_code")?,
    );
    let mut users = Vec::new();
    for (line, r) in rows.iter().enumerate() {
        let id: u64 = parse(&user_file, field(&user_file, r, uu, line)?, "user_id", line)?;
        let Some(&signup_ts) = first_user.get(&id) else {
            continue;
        };
        let age: u32 = parse(&user_file, field(&user_file, r, ua, line)?, "age", line)?;
        let nonempty = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        users.push(User {
            user_id: id,
            signup_ts,
            age_bucket: Some(age_bucket(age).into()),
            gender: r.get(ug).and_then(|s| nonempty(s)),
            occupation: r.get(uo).and_then(|s| nonempty(s)),
            region: r
                .get(uz)
                .and_then(|z| z.trim().chars().next())
                .map(|c| c.to_string()),
            interests: vec![],
        });
    }
    Ok(Dataset {
        items,
        events,
        users,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_does_not_match_the_schema_is_named_with_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let users = Dataset {
            users: vec![User {
                user_id: 1,
                signup_ts: 5,
                ..Default::default()
            }],
            ..Default::default()
        };
        users.write(dir.path(), 0).unwrap();
        // users where items belong
        let e = read_items(&dir.path().join("users.parquet")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("users.parquet"), "{msg}");
        assert!(msg.contains("`items` import schema"), "{msg}");
        assert!(msg.contains("field `"), "names the column: {msg}");
        let e = read_events(&dir.path().join("nothing-here")).unwrap_err();
        assert!(e.to_string().contains("nothing-here"), "{e}");
        assert_eq!(
            read_users(dir.path().join("users.parquet").as_path())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn movielens_files_map_to_the_import_format() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ml-100k.inter"),
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t5\t100\n2\t10\t3\t50\n1\t11\t2\t70\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("ml-100k.item"),
            "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n10\tHeat\t1995\tAction Crime\n11\tBabe\t1995\tComedy\n12\tNever Rated\t1990\tDrama\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("ml-100k.user"),
            "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n1\t24\tM\twriter\t94110\n2\t60\tF\tother\t02139\n",
        )
        .unwrap();
        let d = movielens(dir.path()).unwrap();
        assert_eq!(d.items.len(), 2, "an item nobody rated was never published");
        let heat = d.items.iter().find(|i| i.item_id == 10).unwrap();
        assert_eq!(
            (heat.publish_ts, heat.category.as_str()),
            (50_000, "Action")
        );
        assert_eq!(heat.keywords, ["Action", "Crime"]);
        assert_eq!(heat.title, "Heat 1995");
        let actions: Vec<&str> = d.events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["like", "click", "click"]);
        let u1 = d.users.iter().find(|u| u.user_id == 1).unwrap();
        assert_eq!(u1.signup_ts, 70_000);
        assert_eq!(u1.age_bucket.as_deref(), Some("18-24"));
        assert_eq!(u1.region.as_deref(), Some("9"));
    }
}
