//! Every parser of untrusted update bytes, fed arbitrary and mutated input:
//! it answers with an error, never a panic, a hang or an allocation sized by
//! the input's claims.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use images::image::{MAGIC, describe_parts, read_image, read_manifest, write_image};
use images::manifest::{ApplianceVersion, Digest, LineName, Manifest, PartKind};
use images::tuf::verify::TrustedMetadata;
use images::vectors::{Golden, VendorInputs};
use proptest::prelude::*;

fn manifest(parts: &[(PartKind, &[u8])]) -> Manifest {
    Manifest {
        format: images::manifest::MANIFEST_FORMAT,
        name: "digits".parse::<LineName>().unwrap(),
        version: 1,
        release: 3,
        min_release: 1,
        min_appliance: ApplianceVersion(0, 1, 0),
        latency_budget_ms: Some(50),
        memory_budget_mb: None,
        inputs: vec![],
        outputs: vec![],
        parts: describe_parts(parts),
    }
}

fn image(onnx: &[u8], vectors: &[u8]) -> Vec<u8> {
    let parts = [(PartKind::Onnx, onnx), (PartKind::Vectors, vectors)];
    let mut out = Vec::new();
    write_image(&mut out, &manifest(&parts), &[onnx, vectors]).unwrap();
    out
}

fn read_all(bytes: &[u8]) -> Result<Vec<(PartKind, Vec<u8>)>, images::Error> {
    let mut parts = Vec::new();
    read_image(bytes, |_, part, r| {
        let mut b = Vec::new();
        r.read_to_end(&mut b)
            .map_err(|source| images::Error::Stream {
                what: "part".into(),
                source,
            })?;
        parts.push((part.kind, b));
        Ok(())
    })?;
    Ok(parts)
}

#[test]
fn an_image_round_trips() {
    let bytes = image(b"onnx bytes", b"{}");
    let parts = read_all(&bytes).unwrap();
    assert_eq!(parts[0], (PartKind::Onnx, b"onnx bytes".to_vec()));
    assert_eq!(parts[1], (PartKind::Vectors, b"{}".to_vec()));
}

#[test]
fn manifests_refuse_what_the_appliance_cannot_trust() {
    let good = manifest(&[(PartKind::Onnx, b"x"), (PartKind::Vectors, b"y")]);
    let mut text: serde_json::Value = serde_json::from_slice(&good.to_bytes().unwrap()).unwrap();
    assert!(Manifest::parse(&serde_json::to_vec(&text).unwrap()).is_ok());
    for (field, value, why) in [
        ("format", serde_json::json!(2), "format 2"),
        ("release", serde_json::json!(0), "start at 1"),
        ("min_release", serde_json::json!(9), "above release"),
        ("name", serde_json::json!("../etc"), "model name"),
        (
            "min_appliance",
            serde_json::json!("1.2"),
            "MAJOR.MINOR.PATCH",
        ),
        (
            "latency_budget_ms",
            serde_json::json!(0),
            "latency_budget_ms",
        ),
        ("surprise", serde_json::json!(1), "unknown field"),
    ] {
        let mut bad = text.clone();
        bad[field] = value;
        let e = Manifest::parse(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(e.to_string().contains(why), "{field}: {e}");
    }
    // Parts out of order, or over their bounds.
    text["parts"] = serde_json::json!([text["parts"][1], text["parts"][0]]);
    assert!(Manifest::parse(&serde_json::to_vec(&text).unwrap()).is_err());
    let mut huge = good.clone();
    huge.parts[0].length = u64::MAX;
    let e = Manifest::parse(&serde_json::to_vec(&huge).unwrap()).unwrap_err();
    assert!(e.to_string().contains("over its bound"), "{e}");
}

#[test]
fn a_manifest_length_claim_is_bounded_before_allocation() {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&1u16.to_be_bytes());
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    let e = read_manifest(&mut bytes.as_slice()).unwrap_err();
    assert!(e.to_string().contains("over the bound"), "{e}");
}

#[test]
fn golden_vectors_are_checked_for_shape_and_type() {
    let ok =
        r#"{"cases":[{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1.0,2.5]}]}]}"#;
    assert!(VendorInputs::parse(ok.as_bytes()).is_ok());
    for (bad, why) in [
        (r#"{"cases":[]}"#, "cases required"),
        (
            r#"{"cases":[{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"data":[1.0]}]}]}"#,
            "holds 3 elements",
        ),
        (
            r#"{"cases":[{"inputs":[{"name":"x","datatype":"INT8","shape":[1],"data":["a"]}]}]}"#,
            "not a INT8 value",
        ),
        (
            r#"{"cases":[{"inputs":[{"name":"x","datatype":"FP33","shape":[1],"data":[1]}]}]}"#,
            "unknown datatype",
        ),
        (
            r#"{"cases":[{"inputs":[{"name":"x","datatype":"FP32","shape":[4294967296,4294967296],"data":[]}]}]}"#,
            "more than",
        ),
        (
            r#"{"tolerance":{"absolute":-1,"relative":0},"cases":[{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}]}"#,
            "tolerance",
        ),
    ] {
        let e = VendorInputs::parse(bad.as_bytes()).unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
    let e = Golden::parse(
        ok.replace(
            "\"cases\"",
            "\"format\":1,\"tolerance\":{\"absolute\":0,\"relative\":0},\"cases\"",
        )
        .as_bytes(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no recorded outputs"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_an_image_reader(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read_all(&bytes);
        let mut with_magic = MAGIC.to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = read_all(&with_magic);
    }

    #[test]
    fn every_change_to_an_image_is_caught(at in 0usize..4096, bit in 0u8..8, cut in 0usize..4096, extra in 1usize..64) {
        let good = image(&[7u8; 1500], br#"{"format":1}"#);
        let mut flipped = good.clone();
        let at = at % flipped.len();
        flipped[at] ^= 1 << bit;
        // A flip anywhere is refused, or (inside JSON whitespace or a value
        // that still parses) leaves parts that are checked by digest.
        match read_all(&flipped) {
            Err(_) => {}
            Ok(parts) => prop_assert_eq!(parts, read_all(&good).unwrap()),
        }
        let cut = cut % good.len();
        prop_assert!(read_all(&good[..cut]).is_err());
        let mut longer = good.clone();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert!(read_all(&longer).is_err());
    }

    #[test]
    fn arbitrary_json_never_panics_the_manifest_and_vector_parsers(text in "\\PC{0,512}") {
        let _ = Manifest::parse(text.as_bytes());
        let _ = Golden::parse(text.as_bytes());
        let _ = VendorInputs::parse(text.as_bytes());
        let _ = text.parse::<Digest>();
        let _ = text.parse::<ApplianceVersion>();
    }

    #[test]
    fn stored_trust_parses_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = TrustedMetadata::from_bytes(&bytes);
        let mut framed = b"TUFTRUST\x01".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = TrustedMetadata::from_bytes(&framed);
    }

    #[test]
    fn stored_trust_round_trips(root in proptest::collection::vec(any::<u8>(), 1..256),
                                ts in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256))) {
        let t = TrustedMetadata { root, timestamp: ts, snapshot: None, targets: Some(vec![1, 2, 3]) };
        prop_assert_eq!(TrustedMetadata::from_bytes(&t.to_bytes()).unwrap(), t);
    }
}
