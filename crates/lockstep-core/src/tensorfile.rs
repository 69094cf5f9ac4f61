//! Canonical safetensors files, written and read without the `safetensors` crate.
//!
//! Layout (the safetensors format): 8-byte little-endian header length `n`, `n` bytes of JSON
//! header, then the raw little-endian tensor bytes. lockstep's canonical form:
//! - header keys sorted (`__metadata__` and tensor names, byte order), compact JSON, padded with
//!   spaces so the data starts on an 8-byte boundary;
//! - tensor data laid out in the same sorted name order, contiguous from offset 0;
//! - metadata values are strings; `lockstep.checksum` = SHA-256 of the canonical bytes of the same
//!   file without that key, so any flipped bit (header, metadata or data) is detected on load.
//!
//! Reading treats the file as hostile: every length, offset and shape is checked before use,
//! sizes are computed with checked arithmetic, allocations are bounded by the real file size,
//! and duplicate keys are rejected (serde_json would silently keep the last one).

use crate::{CoreError, canonical::sha256_hex, write_atomic};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Largest header accepted (a checkpoint's header is a few KiB).
pub const MAX_HEADER_BYTES: u64 = 16 << 20;
/// The metadata key holding the checksum.
pub const CHECKSUM_KEY: &str = "lockstep.checksum";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    U32,
    U8,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::U8 => "U8",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F64" => DType::F64,
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "U32" => DType::U32,
            "U8" => DType::U8,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl TensorEntry {
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        TensorEntry {
            dtype: DType::F32,
            shape,
            data,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 (`None` unless the dtype is F32).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == DType::F32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }
}

/// An in-memory safetensors file with sorted tensors and metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, TensorEntry>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    /// Canonical bytes (no checksum added or removed: metadata is written as it is).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        if !self.metadata.is_empty() {
            let meta = self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            header.insert("__metadata__".into(), Value::Object(meta));
        }
        let mut offset = 0usize;
        for (name, t) in &self.tensors {
            let end = offset + t.data.len();
            header.insert(
                name.clone(),
                serde_json::json!({ "dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, end] }),
            );
            offset = end;
        }
        let mut json = serde_json::to_string(&Value::Object(header))
            .expect("serialising a Value cannot fail")
            .into_bytes();
        while !(8 + json.len()).is_multiple_of(8) {
            json.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + json.len() + offset);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        for t in self.tensors.values() {
            out.extend_from_slice(&t.data);
        }
        out
    }

    /// Canonical bytes with `lockstep.checksum` set over the rest of the file.
    pub fn to_bytes_with_checksum(&self) -> Vec<u8> {
        let mut f = self.clone();
        f.metadata.remove(CHECKSUM_KEY);
        let digest = sha256_hex(&f.to_bytes());
        f.metadata.insert(CHECKSUM_KEY.into(), digest);
        f.to_bytes()
    }

    /// Recompute the checksum; errors name the file and say what is wrong.
    pub fn verify_checksum(&self, path: &Path) -> Result<(), CoreError> {
        let Some(stored) = self.metadata.get(CHECKSUM_KEY) else {
            return Err(CoreError::bad_file(
                path,
                "has no lockstep checksum (not written by lockstep, or from another program)",
                "pass a checkpoint from a lockstep run directory",
            ));
        };
        let mut f = self.clone();
        f.metadata.remove(CHECKSUM_KEY);
        let actual = sha256_hex(&f.to_bytes());
        if &actual != stored {
            return Err(CoreError::bad_file(
                path,
                format!(
                    "checksum mismatch: the file is corrupted (stored {stored}, computed {actual})"
                ),
                "restore the file from a copy, or resume from an earlier checkpoint",
            ));
        }
        Ok(())
    }

    pub fn write_atomic(&self, path: &Path) -> Result<(), CoreError> {
        write_atomic(path, &self.to_bytes_with_checksum())
    }

    /// Read and validate a file (structure only; call `verify_checksum` for integrity).
    pub fn read(path: &Path) -> Result<Self, CoreError> {
        let meta =
            std::fs::metadata(path).map_err(|e| CoreError::io(path, "reading metadata of", e))?;
        if meta.is_dir() {
            return Err(CoreError::bad_file(
                path,
                "is a directory, not a safetensors file",
                "pass the .safetensors file inside it",
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| CoreError::io(path, "reading", e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parse safetensors bytes; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CoreError> {
        let bad = |what: String| {
            CoreError::bad_file(
                path,
                what,
                "the file is not a valid safetensors file (truncated or corrupted?): restore it or use another checkpoint",
            )
        };
        if bytes.len() < 8 {
            return Err(bad(format!(
                "is {} bytes long; a safetensors file has at least 8",
                bytes.len()
            )));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let rest = (bytes.len() - 8) as u64;
        if n > MAX_HEADER_BYTES || n > rest {
            return Err(bad(format!(
                "header length {n} exceeds the file ({rest} bytes after the length) or the {MAX_HEADER_BYTES}-byte limit"
            )));
        }
        let header = &bytes[8..8 + n as usize];
        let data = &bytes[8 + n as usize..];
        let entries = parse_unique_object(header)
            .map_err(|e| bad(format!("header is not a JSON object with unique keys: {e}")))?;
        let mut file = TensorFile::default();
        let mut spans = Vec::new();
        for (name, value) in entries {
            if name == "__metadata__" {
                let Value::Object(m) = value else {
                    return Err(bad("__metadata__ is not an object".into()));
                };
                for (k, v) in m {
                    let Value::String(s) = v else {
                        return Err(bad(format!("metadata value of {k:?} is not a string")));
                    };
                    file.metadata.insert(k, s);
                }
                continue;
            }
            let t = parse_tensor_header(&name, &value, data.len()).map_err(bad)?;
            spans.push((t.1, t.2, name.clone()));
            let bytes = data[t.1..t.2].to_vec();
            file.tensors.insert(
                name,
                TensorEntry {
                    dtype: t.0,
                    shape: t.3,
                    data: bytes,
                },
            );
        }
        spans.sort();
        let mut expect = 0usize;
        for (b, e, name) in &spans {
            if *b != expect {
                return Err(bad(format!(
                    "tensor {name:?} starts at byte {b}, expected {expect} (overlap or hole in the data)"
                )));
            }
            expect = *e;
        }
        if expect != data.len() {
            return Err(bad(format!(
                "tensors cover {expect} data bytes but the file has {}",
                data.len()
            )));
        }
        Ok(file)
    }
}

type TensorHeader = (DType, usize, usize, Vec<usize>);

fn parse_tensor_header(name: &str, v: &Value, data_len: usize) -> Result<TensorHeader, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("tensor {name:?}: entry is not an object"))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
    {
        return Err(format!("tensor {name:?}: unexpected key {k:?}"));
    }
    let dtype = obj
        .get("dtype")
        .and_then(Value::as_str)
        .and_then(DType::parse)
        .ok_or_else(|| {
            format!(
                "tensor {name:?}: missing or unknown dtype {:?}",
                obj.get("dtype")
            )
        })?;
    let shape_v = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("tensor {name:?}: missing shape"))?;
    if shape_v.len() > 8 {
        return Err(format!(
            "tensor {name:?}: {} dimensions (at most 8 accepted)",
            shape_v.len()
        ));
    }
    let mut shape = Vec::with_capacity(shape_v.len());
    let mut numel: usize = 1;
    for d in shape_v {
        let d = d.as_u64().ok_or_else(|| {
            format!("tensor {name:?}: shape entry {d} is not a non-negative integer")
        })?;
        let d =
            usize::try_from(d).map_err(|_| format!("tensor {name:?}: dimension {d} too large"))?;
        numel = numel
            .checked_mul(d)
            .ok_or_else(|| format!("tensor {name:?}: shape {shape_v:?} overflows"))?;
        shape.push(d);
    }
    let nbytes = numel
        .checked_mul(dtype.size())
        .ok_or_else(|| format!("tensor {name:?}: byte size overflows"))?;
    let offs = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .ok_or_else(|| format!("tensor {name:?}: data_offsets must be [begin, end]"))?;
    let b = offs[0]
        .as_u64()
        .ok_or_else(|| format!("tensor {name:?}: bad begin offset"))?;
    let e = offs[1]
        .as_u64()
        .ok_or_else(|| format!("tensor {name:?}: bad end offset"))?;
    if b > e || e > data_len as u64 {
        return Err(format!(
            "tensor {name:?}: data_offsets [{b}, {e}] outside the {data_len}-byte data section"
        ));
    }
    if e - b != nbytes as u64 {
        return Err(format!(
            "tensor {name:?}: shape {shape:?} x {} needs {nbytes} bytes but data_offsets span {}",
            dtype.name(),
            e - b
        ));
    }
    Ok((dtype, b as usize, e as usize, shape))
}

/// Parse a JSON object keeping its entries in file order and rejecting duplicate keys.
fn parse_unique_object(bytes: &[u8]) -> Result<Vec<(String, Value)>, String> {
    struct Entries(Vec<(String, Value)>);
    impl<'de> serde::Deserialize<'de> for Entries {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entries;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                    let mut seen = BTreeSet::new();
                    let mut out = Vec::new();
                    while let Some((k, v)) = map.next_entry::<String, Value>()? {
                        if !seen.insert(k.clone()) {
                            return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                        }
                        out.push((k, v));
                    }
                    Ok(Entries(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let e: Entries = serde_json::from_str(text.trim_end_matches(' ')).map_err(|e| e.to_string())?;
    Ok(e.0)
}
