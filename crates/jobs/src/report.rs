//! `coldstart report channels`: channel attribution from the served log and the events.
//!
//! Each event is joined to the served row it followed: by its `request_id` and item when it names
//! one, otherwise to the latest answer that showed the item to the user at or before the event,
//! within `window_ms`. A served row counts as an impression once any event of it arrived (an
//! impression, a click or an engagement), as a click once a click did, and as a like once a like
//! did. Per channel: rows served, impressions, click-through and like rate against the overall
//! rates, and conversion credit: a like credits every channel that recalled the item (full
//! credit), and each of them a `1 / channels` share (shared credit, which sums to the likes).

use coldstart_contracts::aggregator::ServedRow;
use coldstart_contracts::profile::Event;
use coldstart_contracts::types::{Action, Channel};
use coldstart_runtime::parquet_io::read_all;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What the report says of one channel (or of every row, or of forced rows).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ChannelStats {
    /// The channel, `all`, or `forced`.
    pub name: String,
    /// Served rows.
    pub served: u64,
    /// Rows with any event.
    pub impressions: u64,
    /// Rows clicked.
    pub clicks: u64,
    /// Rows liked.
    pub likes: u64,
    /// Likes crediting this channel in full.
    pub credit: f64,
    /// Likes shared among the channels that recalled the item.
    pub shared_credit: f64,
}

impl ChannelStats {
    fn rate(n: u64, d: u64) -> f64 {
        if d == 0 {
            0.0
        } else {
            n as f64 / d as f64
        }
    }
    /// Clicks per impression.
    pub fn ctr(&self) -> f64 {
        Self::rate(self.clicks, self.impressions)
    }
    /// Likes per impression.
    pub fn like_rate(&self) -> f64 {
        Self::rate(self.likes, self.impressions)
    }
}

/// The report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Attribution {
    /// Every served row.
    pub all: ChannelStats,
    /// Per channel, in [`Channel::ALL`] order (channels that served nothing left out).
    pub channels: Vec<ChannelStats>,
    /// Rows traffic control forced in.
    pub forced: ChannelStats,
    /// Events joined to a served row by request id.
    pub by_request_id: u64,
    /// Events joined by user, item and time.
    pub by_time: u64,
    /// Events of items no answer showed the user (organic traffic, other surfaces).
    pub unattributed: u64,
}

#[derive(Default, Clone, Copy)]
struct Outcome {
    seen: bool,
    clicked: bool,
    liked: bool,
}

/// Attributes `events` to `served` rows.
pub fn attribute(served: &[ServedRow], events: &[Event], window_ms: i64) -> Attribution {
    let mut by_request: HashMap<(&str, u64), usize> = HashMap::new();
    let mut by_pair: HashMap<(u64, u64), Vec<(i64, usize)>> = HashMap::new();
    for (i, r) in served.iter().enumerate() {
        by_request.insert((r.request_id.as_str(), r.item_id), i);
        by_pair
            .entry((r.user_id, r.item_id))
            .or_default()
            .push((r.at, i));
    }
    for v in by_pair.values_mut() {
        v.sort_unstable();
    }
    let mut out = vec![Outcome::default(); served.len()];
    let (mut by_request_id, mut by_time, mut unattributed) = (0, 0, 0);
    for e in events {
        let row = match e
            .request_id
            .as_deref()
            .and_then(|r| by_request.get(&(r, e.item_id)))
        {
            Some(&i) => {
                by_request_id += 1;
                Some(i)
            }
            None => {
                let found = by_pair.get(&(e.user_id, e.item_id)).and_then(|v| {
                    // the latest answer at or before the event
                    let k = v.partition_point(|(at, _)| *at <= e.ts);
                    (k > 0)
                        .then(|| v[k - 1])
                        .filter(|(at, _)| e.ts - at <= window_ms)
                        .map(|(_, i)| i)
                });
                if found.is_some() {
                    by_time += 1;
                }
                found
            }
        };
        let Some(i) = row else {
            unattributed += 1;
            continue;
        };
        let o = &mut out[i];
        o.seen = true;
        o.clicked |= e.action == Action::Click;
        o.liked |= e.action == Action::Like;
    }
    let mut all = ChannelStats {
        name: "all".into(),
        ..Default::default()
    };
    let mut forced = ChannelStats {
        name: "forced".into(),
        ..Default::default()
    };
    let mut per: HashMap<Channel, ChannelStats> = HashMap::new();
    for (r, o) in served.iter().zip(&out) {
        let add = |s: &mut ChannelStats, share: f64| {
            s.served += 1;
            s.impressions += u64::from(o.seen);
            s.clicks += u64::from(o.clicked);
            s.likes += u64::from(o.liked);
            if o.liked {
                s.credit += 1.0;
                s.shared_credit += share;
            }
        };
        add(&mut all, 1.0);
        if r.forced {
            add(&mut forced, 1.0);
        }
        let share = 1.0 / r.channels.len().max(1) as f64;
        for c in &r.channels {
            add(
                per.entry(*c).or_insert_with(|| ChannelStats {
                    name: c.as_str().into(),
                    ..Default::default()
                }),
                share,
            );
        }
    }
    Attribution {
        all,
        channels: Channel::ALL.iter().filter_map(|c| per.remove(c)).collect(),
        forced,
        by_request_id,
        by_time,
        unattributed,
    }
}

/// Every Parquet file under `path` (itself, when a file), skipping names that start with `_` or
/// `.` (staging, temporary files), in path order.
pub fn parquet_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('_') || n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every row of the Parquet files under `path` that have the `columns` with `decode`,
/// naming the file on error. A file without them (another kind of log in the same folder, such
/// as the profile's `users` files beside its `events`) is skipped; returns the rows and the
/// files skipped.
pub fn read_rows<T>(
    path: &Path,
    columns: &[&str],
    decode: impl Fn(&arrow::record_batch::RecordBatch) -> coldstart_runtime::ServiceResult<Vec<T>>,
) -> crate::Result<(Vec<T>, Vec<PathBuf>)> {
    let input = |file: &Path, message: String| crate::Error::Input {
        file: file.to_path_buf(),
        message,
    };
    let files = parquet_files(path).map_err(|e| input(path, e.to_string()))?;
    if files.is_empty() {
        return Err(input(path, "no Parquet files here".into()));
    }
    let bar =
        indicatif::ProgressBar::new(files.len() as u64).with_message(format!("{}", path.display()));
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for f in &files {
        let batches = read_all(f).map_err(|e| input(f, e.to_string()))?;
        let fits = batches.first().is_none_or(|b| {
            columns
                .iter()
                .all(|c| b.schema().column_with_name(c).is_some())
        });
        if !fits {
            skipped.push(f.clone());
        } else {
            for b in &batches {
                out.extend(decode(b).map_err(|e| input(f, e.to_string()))?);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if out.is_empty() && !skipped.is_empty() {
        return Err(input(
            path,
            format!(
                "no Parquet file here has the columns {}",
                columns.join(", ")
            ),
        ));
    }
    Ok((out, skipped))
}

impl Attribution {
    /// The table, markdown.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| channel | served | impressions | CTR | CTR / overall | like rate | like rate / overall | credit (full) | credit (shared) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let lift = |x: f64, all: f64| {
            if all > 0.0 {
                format!("{:.2}", x / all)
            } else {
                "–".into()
            }
        };
        for c in self.channels.iter().chain([&self.forced, &self.all]) {
            s.push_str(&format!(
                "| {} | {} | {} | {:.2}% | {} | {:.2}% | {} | {:.0} | {:.1} |\n",
                c.name,
                c.served,
                c.impressions,
                100.0 * c.ctr(),
                lift(c.ctr(), self.all.ctr()),
                100.0 * c.like_rate(),
                lift(c.like_rate(), self.all.like_rate()),
                c.credit,
                c.shared_credit
            ));
        }
        s.push_str(&format!(
            "\nEvents joined by request id: {}; by user, item and time: {}; not from a served answer: {}.\n",
            self.by_request_id, self.by_time, self.unattributed
        ));
        s
    }

    /// Click-through and like rate per channel, bars beside the overall rates (dashed).
    pub fn svg(&self) -> String {
        let rows: Vec<&ChannelStats> = self
            .channels
            .iter()
            .chain([&self.forced])
            .filter(|c| c.served > 0)
            .collect();
        let (w, bar_h, left, top) = (640.0, 22.0, 130.0, 40.0);
        let h = top + rows.len() as f64 * (2.0 * bar_h + 10.0) + 40.0;
        let max = rows
            .iter()
            .flat_map(|c| [c.ctr(), c.like_rate()])
            .chain([self.all.ctr(), self.all.like_rate()])
            .fold(1e-9, f64::max);
        let x = |v: f64| left + v / max * (w - left - 90.0);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"20\" font-size=\"13\">Per channel: CTR (blue) and like rate (orange); dashed: overall</text>\n"
        );
        for (i, c) in rows.iter().enumerate() {
            let y = top + i as f64 * (2.0 * bar_h + 10.0);
            s.push_str(&format!(
                "<text x=\"10\" y=\"{:.1}\">{} ({} served)</text>\n",
                y + bar_h,
                c.name,
                c.served
            ));
            for (k, (v, color)) in [(c.ctr(), "#4e79a7"), (c.like_rate(), "#f28e2b")]
                .iter()
                .enumerate()
            {
                let yy = y + k as f64 * bar_h;
                s.push_str(&format!(
                    "<rect x=\"{left}\" y=\"{yy:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{:.2}%</text>\n",
                    x(*v) - left,
                    bar_h - 3.0,
                    x(*v) + 4.0,
                    yy + bar_h - 8.0,
                    100.0 * v
                ));
            }
        }
        for (v, color) in [
            (self.all.ctr(), "#4e79a7"),
            (self.all.like_rate(), "#f28e2b"),
        ] {
            s.push_str(&format!(
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{1:.1}\" stroke=\"{color}\" stroke-dasharray=\"4 3\"/>\n",
                x(v),
                h - 30.0
            ));
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(
        request: &str,
        at: i64,
        user: u64,
        item: u64,
        ch: &[Channel],
        forced: bool,
    ) -> ServedRow {
        ServedRow {
            request_id: request.into(),
            at,
            user_id: user,
            user_state: "old".into(),
            item_id: item,
            rank: 0,
            channels: ch.to_vec(),
            boost: 1.0,
            forced,
        }
    }

    fn ev(user: u64, item: u64, ts: i64, action: Action, request: Option<&str>) -> Event {
        Event {
            user_id: user,
            item_id: item,
            ts,
            action,
            dwell_ms: None,
            request_id: request.map(str::to_string),
        }
    }

    /// Request ids join exactly; events without one join the latest answer before them within
    /// the window; a like credits every channel of its item in full and shares one like among
    /// them; rates are per impression.
    #[test]
    fn events_credit_the_channels_that_served_them() {
        use Channel::*;
        let rows = vec![
            served("r1", 100, 1, 10, &[Category, Cluster], false),
            served("r1", 100, 1, 11, &[Cluster], false),
            served("r2", 200, 1, 10, &[Popular], false),
            served("r3", 100, 2, 12, &[TwoTower], true),
        ];
        let events = vec![
            // by request id: r1's item 10, though r2 showed it later
            ev(1, 10, 300, Action::Impression, Some("r1")),
            ev(1, 10, 301, Action::Like, Some("r1")),
            // by time: the latest answer at or before 250 that showed item 10 to user 1 is r2
            ev(1, 10, 250, Action::Click, None),
            // user 2's forced item, seen and clicked
            ev(2, 12, 150, Action::Impression, None),
            ev(2, 12, 151, Action::Click, None),
            // too late for the window, and an item never served
            ev(1, 11, 100 + 1_000, Action::Impression, None),
            ev(3, 99, 5, Action::Like, None),
        ];
        let a = attribute(&rows, &events, 500);
        assert_eq!((a.by_request_id, a.by_time, a.unattributed), (2, 3, 2));
        assert_eq!(
            (a.all.served, a.all.impressions, a.all.clicks, a.all.likes),
            (4, 3, 2, 1)
        );
        let get = |n: &str| a.channels.iter().find(|c| c.name == n).unwrap().clone();
        let (cat, clu, pop, tt) = (
            get("category"),
            get("cluster"),
            get("popular"),
            get("two_tower"),
        );
        assert_eq!(
            (
                cat.served,
                cat.impressions,
                cat.likes,
                cat.credit,
                cat.shared_credit
            ),
            (1, 1, 1, 1.0, 0.5)
        );
        assert_eq!(
            (
                clu.served,
                clu.impressions,
                clu.likes,
                clu.credit,
                clu.shared_credit
            ),
            (2, 1, 1, 1.0, 0.5)
        );
        assert_eq!((pop.impressions, pop.clicks, pop.ctr()), (1, 1, 1.0));
        assert_eq!((tt.clicks, a.forced.served, a.forced.clicks), (1, 1, 1));
        let shared: f64 = a.channels.iter().map(|c| c.shared_credit).sum();
        assert!(
            (shared - a.all.likes as f64).abs() < 1e-9,
            "shared credit sums to the likes"
        );
        assert!(a.table().contains("| cluster | 2 | 1 |"), "{}", a.table());
        assert!(a.svg().contains("<rect"));
    }
}
