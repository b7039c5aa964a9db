//! Guarantees only a TPM gives: the PCR policy, and what survives a reboot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, Kind};
use keystore::Error;

#[test]
fn an_extended_pcr_refuses_to_unseal_until_reboot() {
    let mut fx = Fixture::new(Kind::Tpm);
    let store = fx.open();
    store
        .tree("t", "metadata")
        .unwrap()
        .put(b"id", b"secret")
        .unwrap();
    drop(store);

    // Something measured into the policy PCR: another boot chain.
    fx.tpm.as_ref().unwrap().extend_pcr(16);
    let err = fx.try_open().unwrap_err();
    assert!(matches!(err, Error::PcrMismatch { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("the TPM refused to unseal: the PCR values differ"),
        "{message}"
    );
    assert!(message.contains("sha256:16"), "{message}");

    // Nothing can be read without the store; a reboot restores the PCR.
    fx.reboot();
    let store = fx.open();
    let value = store.tree("t", "metadata").unwrap().get(b"id").unwrap();
    assert_eq!(value.unwrap().as_slice(), b"secret");
}

#[test]
fn a_store_sealed_after_an_extend_needs_the_same_pcr_state() {
    // Sealing binds the PCR values current at sealing time, not zeroes.
    let mut fx = Fixture::new(Kind::Tpm);
    fx.tpm.as_ref().unwrap().extend_pcr(16);
    drop(fx.open());
    fx.reboot();
    assert!(matches!(
        fx.try_open().unwrap_err(),
        Error::PcrMismatch { .. }
    ));
    fx.tpm.as_ref().unwrap().extend_pcr(16);
    drop(fx.open());
}

#[test]
fn an_unreachable_tpm_is_a_clear_error() {
    let mut fx = Fixture::new(Kind::Tpm);
    let tcti = fx.tpm.as_ref().unwrap().tcti();
    fx.tpm.as_mut().unwrap().stop();
    let err = keystore::TpmBackend::new(&tcti, common::TEST_PCRS.parse().unwrap()).unwrap_err();
    assert!(err.to_string().contains("cannot reach the TPM"), "{err}");

    let err =
        keystore::TpmBackend::new("nonsense:", common::TEST_PCRS.parse().unwrap()).unwrap_err();
    assert!(matches!(err, Error::InvalidTcti { .. }), "{err:?}");
}
