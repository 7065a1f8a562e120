//! Input validation for everything that enters through the public API: JSON lines are parsed row
//! by row into the contracts' row types, and every row (from JSON or Arrow) is checked against the
//! configured limits. The first problem is reported with its row and field; a batch with any bad
//! row is rejected whole, so nothing of it is stored.

use crate::encoder::Item;
use crate::profile::{Event, User};
use coldstart_runtime::config::LimitsConfig;
use coldstart_runtime::{ErrorCode, ServiceError, ServiceResult};
use serde_json::{Map, Value};

pub use coldstart_runtime::now_ms;

fn check_rows(n: usize, limits: &LimitsConfig) -> ServiceResult<()> {
    if n == 0 {
        return Err(ServiceError::invalid("the batch has no rows"));
    }
    if n > limits.max_batch_rows {
        return Err(ServiceError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the batch has {n} rows, the limit is {} (limits.max_batch_rows)",
                limits.max_batch_rows
            ),
        ));
    }
    Ok(())
}

fn check_ts(
    row: usize,
    field: &str,
    ts: i64,
    now: i64,
    limits: &LimitsConfig,
) -> ServiceResult<()> {
    let max = now + limits.max_future_skew_s * 1000;
    if ts > max {
        return Err(ServiceError::bad_row(
            row,
            field,
            format!(
                "{ts} ms is {} s in the future, at most {} s is allowed",
                (ts - now) / 1000,
                limits.max_future_skew_s
            ),
        ));
    }
    if ts < 0 {
        return Err(ServiceError::bad_row(
            row,
            field,
            format!("{ts} is before 1970"),
        ));
    }
    Ok(())
}

fn check_text(
    row: usize,
    field: &str,
    s: &str,
    required: bool,
    limits: &LimitsConfig,
) -> ServiceResult<()> {
    if required && s.trim().is_empty() {
        return Err(ServiceError::bad_row(
            row,
            field,
            "is empty, a non-empty string is required",
        ));
    }
    if s.len() > limits.max_text_bytes {
        return Err(ServiceError::bad_row(
            row,
            field,
            format!(
                "is {} bytes, at most {} (limits.max_text_bytes)",
                s.len(),
                limits.max_text_bytes
            ),
        ));
    }
    Ok(())
}

/// Checks items against the limits. `now` is ms since the epoch.
pub fn items(items: &[Item], limits: &LimitsConfig, now: i64) -> ServiceResult<()> {
    check_rows(items.len(), limits)?;
    let mut ids = std::collections::HashSet::with_capacity(items.len());
    for (r, it) in items.iter().enumerate() {
        if !ids.insert(it.item_id) {
            return Err(ServiceError::bad_row(
                r,
                "item_id",
                format!("{} appears twice in the batch", it.item_id),
            ));
        }
        check_ts(r, "publish_ts", it.publish_ts, now, limits)?;
        check_text(r, "category", &it.category, true, limits)?;
        check_text(r, "title", &it.title, false, limits)?;
        if let Some(b) = &it.body {
            check_text(r, "body", b, false, limits)?;
        }
        if it.keywords.len() > limits.max_keywords {
            return Err(ServiceError::bad_row(
                r,
                "keywords",
                format!(
                    "has {} keywords, at most {} (limits.max_keywords)",
                    it.keywords.len(),
                    limits.max_keywords
                ),
            ));
        }
        for k in &it.keywords {
            check_text(r, "keywords", k, true, limits)?;
        }
        if it.title.trim().is_empty()
            && it.body.as_deref().unwrap_or("").trim().is_empty()
            && it.image_vec.is_none()
        {
            return Err(ServiceError::bad_row(
                r,
                "title",
                "the item has no text (title, body) and no image_vec",
            ));
        }
        if let Some(v) = &it.image_vec {
            if v.len() != limits.image_dim {
                return Err(ServiceError::bad_row(
                    r,
                    "image_vec",
                    format!(
                        "has length {}, expected {} (limits.image_dim)",
                        v.len(),
                        limits.image_dim
                    ),
                ));
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(ServiceError::bad_row(
                    r,
                    "image_vec",
                    format!("element {i} is {}, expected a finite number", v[i]),
                ));
            }
        }
        for (field, q) in [
            ("quality", it.quality),
            ("author_quality", it.author_quality),
        ] {
            if let Some(q) = q {
                if !(0.0..=1.0).contains(&q) {
                    return Err(ServiceError::bad_row(
                        r,
                        field,
                        format!("{q} is outside [0, 1]"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks events against the limits.
pub fn events(events: &[Event], limits: &LimitsConfig, now: i64) -> ServiceResult<()> {
    check_rows(events.len(), limits)?;
    for (r, e) in events.iter().enumerate() {
        check_ts(r, "ts", e.ts, now, limits)?;
    }
    Ok(())
}

/// Checks users against the limits.
pub fn users(users: &[User], limits: &LimitsConfig, now: i64) -> ServiceResult<()> {
    check_rows(users.len(), limits)?;
    for (r, u) in users.iter().enumerate() {
        check_ts(r, "signup_ts", u.signup_ts, now, limits)?;
        for (f, v) in [
            ("age_bucket", &u.age_bucket),
            ("gender", &u.gender),
            ("occupation", &u.occupation),
            ("region", &u.region),
        ] {
            if let Some(v) = v {
                check_text(r, f, v, false, limits)?;
            }
        }
        if u.interests.len() > limits.max_keywords {
            return Err(ServiceError::bad_row(
                r,
                "interests",
                format!(
                    "has {} entries, at most {}",
                    u.interests.len(),
                    limits.max_keywords
                ),
            ));
        }
        for i in &u.interests {
            check_text(r, "interests", i, true, limits)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JSON lines

/// Parses JSON lines (one object a line; blank lines skipped) with `parse_row`, naming the row of
/// any problem. Rows are numbered from zero over non-blank lines.
pub fn json_lines<T>(
    body: &str,
    limits: &LimitsConfig,
    parse_row: impl Fn(usize, &Map<String, Value>) -> ServiceResult<T>,
) -> ServiceResult<Vec<T>> {
    let mut out = Vec::new();
    for (row, line) in body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if row >= limits.max_batch_rows {
            return check_rows(row + 1, limits).map(|_| out);
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| ServiceError::bad_row(row, "(json)", format!("malformed JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ServiceError::bad_row(row, "(json)", "expected a JSON object"))?;
        out.push(parse_row(row, obj)?);
    }
    Ok(out)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn present<'a>(o: &'a Map<String, Value>, f: &str) -> Option<&'a Value> {
    o.get(f).filter(|v| !v.is_null())
}

fn req<'a>(o: &'a Map<String, Value>, row: usize, f: &str) -> ServiceResult<&'a Value> {
    present(o, f).ok_or_else(|| ServiceError::bad_row(row, f, "missing, a value is required"))
}

fn as_u64(v: &Value, row: usize, f: &str) -> ServiceResult<u64> {
    v.as_u64().ok_or_else(|| {
        ServiceError::bad_row(
            row,
            f,
            format!("got {} ({v}), expected an unsigned integer", type_name(v)),
        )
    })
}

fn as_f32(v: &Value, row: usize, f: &str) -> ServiceResult<f32> {
    v.as_f64().map(|x| x as f32).ok_or_else(|| {
        ServiceError::bad_row(row, f, format!("got {}, expected a number", type_name(v)))
    })
}

fn as_str<'a>(v: &'a Value, row: usize, f: &str) -> ServiceResult<&'a str> {
    v.as_str().ok_or_else(|| {
        ServiceError::bad_row(row, f, format!("got {}, expected a string", type_name(v)))
    })
}

fn as_ts(v: &Value, row: usize, f: &str) -> ServiceResult<i64> {
    if let Some(ms) = v.as_i64() {
        return Ok(ms);
    }
    if let Some(s) = v.as_str() {
        return parse_rfc3339_ms(s).ok_or_else(|| {
            ServiceError::bad_row(
                row,
                f,
                format!("{s:?} is not an RFC 3339 time such as 2026-01-02T03:04:05Z"),
            )
        });
    }
    Err(ServiceError::bad_row(
        row,
        f,
        format!(
            "got {}, expected ms since the epoch or an RFC 3339 string",
            type_name(v)
        ),
    ))
}

fn as_str_list(v: &Value, row: usize, f: &str) -> ServiceResult<Vec<String>> {
    let arr = v.as_array().ok_or_else(|| {
        ServiceError::bad_row(
            row,
            f,
            format!("got {}, expected an array of strings", type_name(v)),
        )
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_str().map(str::to_string).ok_or_else(|| {
                ServiceError::bad_row(
                    row,
                    f,
                    format!("element {i} is {}, expected a string", type_name(x)),
                )
            })
        })
        .collect()
}

fn opt<T>(
    o: &Map<String, Value>,
    row: usize,
    f: &str,
    conv: impl Fn(&Value, usize, &str) -> ServiceResult<T>,
) -> ServiceResult<Option<T>> {
    present(o, f).map(|v| conv(v, row, f)).transpose()
}

/// Parses one `items` row.
pub fn item_row(row: usize, o: &Map<String, Value>) -> ServiceResult<Item> {
    Ok(Item {
        item_id: as_u64(req(o, row, "item_id")?, row, "item_id")?,
        publish_ts: as_ts(req(o, row, "publish_ts")?, row, "publish_ts")?,
        author_id: opt(o, row, "author_id", as_u64)?,
        category: as_str(req(o, row, "category")?, row, "category")?.to_string(),
        keywords: opt(o, row, "keywords", as_str_list)?.unwrap_or_default(),
        title: opt(o, row, "title", |v, r, f| {
            as_str(v, r, f).map(str::to_string)
        })?
        .unwrap_or_default(),
        body: opt(o, row, "body", |v, r, f| {
            as_str(v, r, f).map(str::to_string)
        })?,
        image_vec: opt(o, row, "image_vec", |v, r, f| {
            let arr = v.as_array().ok_or_else(|| {
                ServiceError::bad_row(
                    r,
                    f,
                    format!("got {}, expected an array of numbers", type_name(v)),
                )
            })?;
            arr.iter()
                .enumerate()
                .map(|(i, x)| {
                    x.as_f64().map(|x| x as f32).ok_or_else(|| {
                        ServiceError::bad_row(
                            r,
                            f,
                            format!("element {i} is {}, expected a number", type_name(x)),
                        )
                    })
                })
                .collect()
        })?,
        quality: opt(o, row, "quality", as_f32)?,
        author_quality: opt(o, row, "author_quality", as_f32)?,
    })
}

/// Parses one `events` row.
pub fn event_row(row: usize, o: &Map<String, Value>) -> ServiceResult<Event> {
    Ok(Event {
        user_id: as_u64(req(o, row, "user_id")?, row, "user_id")?,
        item_id: as_u64(req(o, row, "item_id")?, row, "item_id")?,
        ts: as_ts(req(o, row, "ts")?, row, "ts")?,
        action: as_str(req(o, row, "action")?, row, "action")?
            .parse()
            .map_err(|e: String| ServiceError::bad_row(row, "action", e))?,
        dwell_ms: opt(o, row, "dwell_ms", |v, r, f| {
            as_u64(v, r, f).and_then(|x| {
                u32::try_from(x)
                    .map_err(|_| ServiceError::bad_row(r, f, format!("{x} does not fit uint32")))
            })
        })?,
        request_id: opt(o, row, "request_id", |v, r, f| {
            let s = as_str(v, r, f)?;
            crate::types::check_request_id(s).map_err(|e| ServiceError::bad_row(r, f, e))?;
            Ok(s.to_string())
        })?,
    })
}

/// Parses one `users` row.
pub fn user_row(row: usize, o: &Map<String, Value>) -> ServiceResult<User> {
    let s = |f: &str| opt(o, row, f, |v, r, f| as_str(v, r, f).map(str::to_string));
    Ok(User {
        user_id: as_u64(req(o, row, "user_id")?, row, "user_id")?,
        signup_ts: as_ts(req(o, row, "signup_ts")?, row, "signup_ts")?,
        age_bucket: s("age_bucket")?,
        gender: s("gender")?,
        occupation: s("occupation")?,
        region: s("region")?,
        interests: opt(o, row, "interests", as_str_list)?.unwrap_or_default(),
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` into ms since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    // byte-indexed below: anything non-ASCII is not RFC 3339 anyway
    if !s.is_ascii() {
        return None;
    }
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = digits.parse().ok()?;
    }
    let offset_min = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz[1..3].parse::<i64>().ok()? * 60 + tz[4..6].parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // days from civil (Howard Hinnant's algorithm)
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_min * 60) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-28T10:00:00.5Z"),
            Some(1_795_860_000_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-28T12:00:00+02:00"),
            Some(1_795_860_000_000)
        );
        assert_eq!(parse_rfc3339_ms("2026-13-28T12:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_parsing_never_panics(s in "\\PC{0,40}", tail in "[+\\-0-9:é]{0,8}") {
            let _ = parse_rfc3339_ms(&s);
            let _ = parse_rfc3339_ms(&format!("2026-01-01T00:00:00{tail}"));
        }
    }

    /// An event names the recall answer it followed; a malformed id is refused naming the row,
    /// the field and what was expected, and a good one goes through Arrow unchanged.
    #[test]
    fn request_ids_are_checked() {
        let row = |r: &str| {
            serde_json::json!({"user_id": 1, "item_id": 2, "ts": 3, "action": "impression", "request_id": r})
                .as_object()
                .unwrap()
                .clone()
        };
        let e = event_row(0, &row("r-1:a.b_c")).unwrap();
        assert_eq!(e.request_id.as_deref(), Some("r-1:a.b_c"));
        assert_eq!(
            Event::from_batch(&Event::to_batch(std::slice::from_ref(&e))).unwrap(),
            [e]
        );
        for bad in ["", "a b", &"x".repeat(65)] {
            let err = event_row(4, &row(bad)).unwrap_err().to_string();
            assert!(err.contains("row 4") && err.contains("request_id"), "{err}");
        }
    }

    #[test]
    fn multibyte_timezones_are_refused_not_panicked_on() {
        assert_eq!(parse_rfc3339_ms("2026-01-01T00:00:00+0é00"), None);
    }

    #[test]
    fn bad_rows_name_row_and_field() {
        let limits = LimitsConfig::default();
        let now = 1_800_000_000_000;
        let body = "{\"user_id\":1,\"item_id\":2,\"ts\":5,\"action\":\"like\"}\n{\"user_id\":1,\"item_id\":2,\"ts\":5,\"action\":\"pin\"}";
        // an unknown action is refused as the row is read
        let err = json_lines(body, &limits, event_row).unwrap_err();
        assert_eq!(err.location.as_ref().unwrap().row, 1);
        assert_eq!(err.location.as_ref().unwrap().field, "action");
        assert!(err.text().contains("\"pin\""), "{err}");

        let err = json_lines("{\"user_id\":\"x\"}", &limits, event_row).unwrap_err();
        assert!(
            err.text().contains("`user_id`") && err.text().contains("a string"),
            "{err}"
        );
        let err = json_lines(
            "{\"user_id\":1,\"item_id\":2,\"action\":\"like\"}",
            &limits,
            event_row,
        )
        .unwrap_err();
        assert!(err.text().contains("`ts`: missing"), "{err}");
        let err = json_lines("{oops", &limits, event_row).unwrap_err();
        assert!(err.text().contains("malformed JSON"), "{err}");

        let future = format!(
            "{{\"user_id\":1,\"item_id\":2,\"ts\":{},\"action\":\"like\"}}",
            now + 86_400_000
        );
        let ev = json_lines(&future, &limits, event_row).unwrap();
        assert!(events(&ev, &limits, now)
            .unwrap_err()
            .text()
            .contains("in the future"));
    }

    #[test]
    fn oversized_batches_are_refused() {
        let limits = LimitsConfig {
            max_batch_rows: 2,
            ..Default::default()
        };
        let line = "{\"user_id\":1,\"item_id\":2,\"ts\":5,\"action\":\"like\"}\n";
        let err = json_lines(&line.repeat(3), &limits, event_row).unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn items_need_text_or_image_and_a_sane_vector() {
        let limits = LimitsConfig {
            image_dim: 2,
            ..Default::default()
        };
        let mut it = Item {
            item_id: 1,
            publish_ts: 0,
            author_id: None,
            category: "c".into(),
            keywords: vec![],
            title: " ".into(),
            body: None,
            image_vec: None,
            quality: None,
            author_quality: None,
        };
        assert!(items(&[it.clone()], &limits, 0)
            .unwrap_err()
            .text()
            .contains("no text"));
        it.image_vec = Some(vec![1.0, f32::NAN]);
        assert!(items(&[it.clone()], &limits, 0)
            .unwrap_err()
            .text()
            .contains("element 1"));
        it.image_vec = Some(vec![1.0]);
        assert!(items(&[it.clone()], &limits, 0)
            .unwrap_err()
            .text()
            .contains("expected 2"));
        it.image_vec = Some(vec![1.0, 0.0]);
        items(&[it], &limits, 0).unwrap();
    }
}
