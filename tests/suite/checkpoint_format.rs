//! The checkpoint file format: standard safetensors, canonical bytes, hostile-input safety.

use lockstep_core::tensorfile::{DType, TensorEntry, TensorFile};
use std::collections::BTreeMap;
use std::path::Path;

fn sample() -> TensorFile {
    let mut f = TensorFile::default();
    f.tensors
        .insert("b".into(), TensorEntry::from_f32(vec![2], &[1.0, -2.5]));
    f.tensors.insert(
        "a.weight".into(),
        TensorEntry::from_f32(vec![2, 3], &[0.5; 6]),
    );
    f.metadata.insert("z".into(), "last".into());
    f.metadata.insert("a".into(), "first".into());
    f
}

/// Independent check of the layout against the safetensors spec, by hand.
#[test]
fn bytes_follow_the_safetensors_layout_with_sorted_header() {
    let bytes = sample().to_bytes();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + n) % 8, 0, "data must start 8-aligned");
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap().trim_end();
    assert_eq!(
        header,
        r#"{"__metadata__":{"a":"first","z":"last"},"a.weight":{"data_offsets":[0,24],"dtype":"F32","shape":[2,3]},"b":{"data_offsets":[24,32],"dtype":"F32","shape":[2]}}"#
    );
    assert_eq!(&bytes[8 + n + 24..8 + n + 28], &1.0f32.to_le_bytes());
    assert_eq!(bytes.len(), 8 + n + 32);
}

#[test]
fn round_trip_and_checksum() {
    let f = sample();
    let bytes = f.to_bytes_with_checksum();
    let back = TensorFile::from_bytes(&bytes, Path::new("x")).unwrap();
    back.verify_checksum(Path::new("x")).unwrap();
    assert_eq!(back.tensors, f.tensors);
    // The same content inserted in another order gives the same bytes.
    let mut g = TensorFile::default();
    for (k, v) in f.tensors.iter().rev() {
        g.tensors.insert(k.clone(), v.clone());
    }
    g.metadata = f
        .metadata
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(g.to_bytes_with_checksum(), bytes);
}

#[test]
fn every_single_bit_flip_is_detected() {
    let bytes = sample().to_bytes_with_checksum();
    let p = Path::new("flip.safetensors");
    for i in 0..bytes.len() {
        for bit in [0u8, 3, 7] {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let detected = match TensorFile::from_bytes(&b, p) {
                Err(_) => true,
                Ok(f) => f.verify_checksum(p).is_err() || f.to_bytes() != b,
            };
            assert!(detected, "flip of bit {bit} in byte {i} went undetected");
        }
    }
}

#[test]
fn hostile_headers_are_rejected_without_panic_or_huge_allocation() {
    let p = Path::new("evil.safetensors");
    let with_header = |h: &str, data: usize| {
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data));
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("short", vec![1, 2, 3]),
        ("huge header length", u64::MAX.to_le_bytes().to_vec()),
        ("header past end", {
            let mut b = 100u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            b
        }),
        ("not json", with_header("{nope", 0)),
        (
            "absurd shape",
            with_header(
                r#"{"t":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#,
                4,
            ),
        ),
        (
            "offsets out of range",
            with_header(
                r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,400000000000]}}"#,
                4,
            ),
        ),
        (
            "size mismatch",
            with_header(
                r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                4,
            ),
        ),
        (
            "unknown dtype",
            with_header(
                r#"{"t":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
        ),
        (
            "duplicate names",
            with_header(
                r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
            ),
        ),
        (
            "overlap",
            with_header(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
        ),
        (
            "hole",
            with_header(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
            ),
        ),
        (
            "metadata not strings",
            with_header(r#"{"__metadata__":{"a":1}}"#, 0),
        ),
    ];
    for (what, bytes) in cases {
        let r = TensorFile::from_bytes(&bytes, p);
        let e = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(e.to_string().contains("evil.safetensors"), "{what}: {e}");
    }
    // A valid file from another program (no lockstep checksum) parses but fails verification.
    let foreign = with_header(
        r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        4,
    );
    let f = TensorFile::from_bytes(&foreign, p).unwrap();
    assert!(
        f.verify_checksum(p)
            .unwrap_err()
            .to_string()
            .contains("checksum")
    );
    assert_eq!(f.tensors["t"].dtype, DType::F32);
}
