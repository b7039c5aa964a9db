//! Property tests for every parser of untrusted input in this crate: the
//! encrypted key file, CSRs, rates, quotas, model lists, names, addresses
//! and serials. None may panic; valid inputs must round-trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use provisioning::admin::ApplianceAddress;
use provisioning::grant::{ModelList, Quota, Rate};
use provisioning::keyfile::SealedKey;
use provisioning::{CertificateRequest, ClientName, Passphrase, Serial, SiteName};

const PASS: &str = "property passphrase";

/// One sealed file, made once (each seal costs 600,000 PBKDF2 rounds).
fn sealed_file() -> &'static Vec<u8> {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        SealedKey::seal(b"a pkcs8 document", &Passphrase::new(PASS))
            .unwrap()
            .to_bytes()
    })
}

fn csr_der() -> &'static Vec<u8> {
    static CSR: OnceLock<Vec<u8>> = OnceLock::new();
    CSR.get_or_init(|| {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec!["box.example".to_owned()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec()
    })
}

fn reference_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

proptest! {
    #[test]
    fn key_file_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = SealedKey::parse(&bytes, Path::new("k"));
    }

    #[test]
    fn key_file_parser_survives_mutations(pos in 0usize..200, xor in 1u8..=255, cut in 0usize..200) {
        let mut bytes = sealed_file().clone();
        let pos = pos % bytes.len();
        bytes[pos] ^= xor;
        let cut = cut.min(bytes.len());
        let _ = SealedKey::parse(&bytes, Path::new("k"));
        let _ = SealedKey::parse(&bytes[..cut], Path::new("k"));
    }

    #[test]
    fn csr_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = CertificateRequest::from_der(&bytes, Path::new("x.csr"));
        let _ = CertificateRequest::from_pem(&bytes, Path::new("x.csr"));
    }

    #[test]
    fn mutated_csrs_never_certify_another_key(pos in 0usize..1000, xor in 1u8..=255) {
        let original = csr_der();
        let good = CertificateRequest::from_der(original, Path::new("x.csr")).unwrap();
        let mut bytes = original.clone();
        let pos = pos % bytes.len();
        bytes[pos] ^= xor;
        if let Ok(csr) = CertificateRequest::from_der(&bytes, Path::new("x.csr")) {
            prop_assert_eq!(csr.public_key_der(), good.public_key_der());
        }
    }

    #[test]
    fn rate_parser_never_panics(s in ".{0,40}") {
        let _ = s.parse::<Rate>();
    }

    #[test]
    fn rates_round_trip(whole in 1u32..100_000, frac in 0u32..1000, unit in prop::sample::select(vec!["s", "min", "h"])) {
        let text = format!("{whole}.{frac:03}/{unit}");
        let divisor = match unit { "s" => 1.0, "min" => 60.0, _ => 3600.0 };
        let expected = (f64::from(whole) + f64::from(frac) / 1000.0) / divisor;
        let rate: Rate = text.parse().unwrap();
        prop_assert!((rate.per_second() - expected).abs() <= expected * 1e-12);
    }

    #[test]
    fn quota_parser_never_panics(s in ".{0,40}") {
        let _ = s.parse::<Quota>();
    }

    #[test]
    fn quotas_round_trip(n in 1u64..u64::MAX) {
        let q: Quota = format!("{n}/day").parse().unwrap();
        prop_assert_eq!(q, Quota::PerDay(n));
        prop_assert_eq!(q.to_string().parse::<Quota>().unwrap(), q);
    }

    #[test]
    fn client_names_match_their_rule(s in "[a-z0-9._A-Z/ -]{0,70}") {
        prop_assert_eq!(ClientName::new(&s).is_ok(), reference_label(&s, 63));
    }

    #[test]
    fn name_parsers_never_panic(s in ".{0,300}") {
        prop_assert_eq!(ClientName::new(&s).is_ok(), reference_label(&s, 63));
        prop_assert_eq!(SiteName::new(&s).is_ok(), reference_label(&s, 253));
        let _ = s.parse::<ModelList>();
        let _ = s.parse::<ApplianceAddress>();
        let _ = s.parse::<Serial>();
    }

    #[test]
    fn serials_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..20)) {
        let serial = Serial::from_der_integer(&bytes);
        let text = serial.to_hex();
        prop_assert_eq!(text.parse::<Serial>().unwrap(), serial);
    }
}

#[test]
fn mutated_key_files_never_open() {
    let path = Path::new("k");
    let good = sealed_file();
    let pass = Passphrase::new(PASS);
    assert!(
        SealedKey::parse(good, path)
            .unwrap()
            .open(&pass, path)
            .is_ok()
    );
    // Each open costs a full PBKDF2 run, so this walks a handful of
    // positions across every field rather than thousands of random ones.
    for pos in [
        0,
        7,
        8,
        9,
        12,
        13,
        28,
        29,
        40,
        41,
        good.len() / 2,
        good.len() - 1,
    ] {
        let mut bytes = good.clone();
        bytes[pos] ^= 0x01;
        if let Ok(parsed) = SealedKey::parse(&bytes, path) {
            assert!(
                parsed.open(&pass, path).is_err(),
                "flip at {pos} still opened"
            );
        }
    }
}
