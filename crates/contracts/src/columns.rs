//! Column access for decoding untrusted batches (every error names the field, and the row when
//! there is one; nothing panics on bad input) and builders for encoding rows.
#![allow(dead_code)]

use arrow::array::{
    Array, ArrayRef, Float32Array, Float32Builder, ListArray, ListBuilder, StringArray,
    StringBuilder, TimestampMillisecondBuilder, UInt64Array,
};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use coldstart_runtime::{ServiceError, ServiceResult};
use std::sync::Arc;

pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}
pub(crate) fn utf8_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}
pub(crate) fn f32_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float32, true)))
}
pub(crate) fn u64_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::UInt64, true)))
}

pub(crate) fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    expected: &str,
) -> ServiceResult<&'a T> {
    let col = batch.column_by_name(name).ok_or_else(|| {
        ServiceError::invalid(format!(
            "field `{name}`: missing column, expected {expected}"
        ))
    })?;
    col.as_any().downcast_ref::<T>().ok_or_else(|| {
        ServiceError::invalid(format!(
            "field `{name}`: column has type {}, expected {expected}",
            col.data_type()
        ))
    })
}

pub(crate) fn opt_column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    expected: &str,
) -> ServiceResult<Option<&'a T>> {
    if batch.column_by_name(name).is_none() {
        return Ok(None);
    }
    column(batch, name, expected).map(Some)
}

pub(crate) fn required<T>(
    arr: &dyn Array,
    row: usize,
    field: &str,
    get: impl Fn(usize) -> T,
) -> ServiceResult<T> {
    if arr.is_null(row) {
        Err(ServiceError::bad_row(
            row,
            field,
            "is null, a value is required",
        ))
    } else {
        Ok(get(row))
    }
}

pub(crate) fn optional<T>(
    arr: Option<&dyn Array>,
    row: usize,
    get: impl Fn(usize) -> T,
) -> Option<T> {
    arr.filter(|a| !a.is_null(row)).map(|_| get(row))
}

pub(crate) fn list_strings(
    list: &ListArray,
    row: usize,
    field: &str,
) -> ServiceResult<Vec<String>> {
    let values = list.value(row);
    let values = values
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| ServiceError::bad_row(row, field, "list items must be utf8"))?;
    (0..values.len())
        .map(|i| {
            if values.is_null(i) {
                Err(ServiceError::bad_row(
                    row,
                    field,
                    format!("item {i} is null"),
                ))
            } else {
                Ok(values.value(i).to_string())
            }
        })
        .collect()
}

pub(crate) fn list_f32(list: &ListArray, row: usize) -> Vec<f32> {
    let v = list.value(row);
    v.as_any()
        .downcast_ref::<Float32Array>()
        .map(|a| a.iter().map(|x| x.unwrap_or(f32::NAN)).collect())
        .unwrap_or_default()
}

/// A nullable `list<float32>` column of vectors.
pub(crate) fn f32_lists<'a>(rows: impl Iterator<Item = Option<&'a [f32]>>) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Float32,
        true,
    )));
    for v in rows {
        match v {
            Some(v) => {
                b.values().append_slice(v);
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

/// A vector of a nullable `list<float32>` column; a null or non-finite element is refused.
pub(crate) fn opt_vector(
    col: Option<&ListArray>,
    row: usize,
    field: &str,
) -> ServiceResult<Option<Vec<f32>>> {
    let Some(l) = col.filter(|l| !l.is_null(row)) else {
        return Ok(None);
    };
    let v = list_f32(l, row);
    if v.iter().any(|x| !x.is_finite()) {
        return Err(ServiceError::bad_row(
            row,
            field,
            "holds a null or non-finite value",
        ));
    }
    Ok(Some(v))
}

pub(crate) fn list_u64(list: &ListArray, row: usize) -> Vec<u64> {
    let v = list.value(row);
    v.as_any()
        .downcast_ref::<UInt64Array>()
        .map(|a| a.iter().flatten().collect())
        .unwrap_or_default()
}

pub(crate) const TS: &str = "timestamp[ms, UTC]";
pub(crate) const LIST_UTF8: &str = "list<utf8>";

pub(crate) fn string_list_builder() -> ListBuilder<StringBuilder> {
    ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Utf8,
        true,
    )))
}

pub(crate) fn finish(schema: SchemaRef, cols: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(schema, cols).expect("columns built to match their schema")
}

pub(crate) fn ts_array(values: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = TimestampMillisecondBuilder::new().with_timezone("UTC");
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

/// The optional `request_id` of row `r`, checked.
pub(crate) fn request_id_at(
    col: Option<&arrow::array::StringArray>,
    r: usize,
) -> ServiceResult<Option<String>> {
    use arrow::array::Array;
    match col {
        Some(c) if c.is_valid(r) => {
            let s = c.value(r);
            crate::types::check_request_id(s)
                .map_err(|e| ServiceError::bad_row(r, "request_id", e))?;
            Ok(Some(s.to_string()))
        }
        _ => Ok(None),
    }
}
