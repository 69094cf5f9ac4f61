//! Canonical bytes: JSON with sorted keys and shortest round-trip floats, SHA-256 digests, and
//! atomic file writes (temp file + fsync + rename + directory fsync).
//!
//! `serde_json::Value` keeps objects in a `BTreeMap` (the `preserve_order` feature is off), so
//! serialising through a `Value` sorts every key at every depth; floats are printed by `ryu`
//! (shortest representation that round-trips), which depends on the value only.

use crate::CoreError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Serialise `value` as compact JSON with every object's keys sorted.
pub fn canonical_json<T: Serialize>(value: &T) -> String {
    // Serialising a plain data struct to a Value cannot fail (no non-string map keys are used).
    let v = serde_json::to_value(value).expect("canonical_json: value must serialise to JSON");
    serde_json::to_string(&v).expect("serialising a serde_json::Value cannot fail")
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Write `bytes` to `path` so that a reader (or a crash) sees either the old file or the whole new
/// one: write a sibling temp file, fsync it, rename over `path`, fsync the directory. When
/// anything fails the temp file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| CoreError::io(&tmp, "creating a temp file", e))?;
        f.write_all(bytes)
            .map_err(|e| CoreError::io(&tmp, "writing", e))?;
        f.sync_all()
            .map_err(|e| CoreError::io(&tmp, "fsyncing", e))?;
        drop(f);
        std::fs::rename(&tmp, path)
            .map_err(|e| CoreError::io(path, "renaming the temp file into place", e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Directory fsync makes the rename durable; some filesystems refuse it, which is harmless.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
