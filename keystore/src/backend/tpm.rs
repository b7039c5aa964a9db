//! The TPM 2.0 backend (tss-esapi 7.x, any TCTI).
//!
//! The KEK is sealed as a keyed-hash object under the owner hierarchy's
//! primary storage key (ECC P-256, re-derived from a fixed template at every
//! use, so nothing but the sealed object's blobs is stored). The object's
//! authorisation is a PolicyPCR digest with `userWithAuth` off: with it on,
//! anyone could unseal with the (empty) password and the PCR policy would be
//! silently bypassed.
//!
//! Both directions travel encrypted between us and the TPM: sealing uses an
//! HMAC session salted with the primary key and command parameter
//! encryption; unsealing uses a salted policy session with response
//! encryption. A bus or socket sniffer sees no key material.
//!
//! Each operation opens its own TPM connection and flushes every transient
//! object and session it created: swtpm serves one client at a time and has
//! few object slots, and a connection held open would keep other tools out.

use std::fmt;
use std::str::FromStr;

use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::{
    CapabilityType, SessionType, StartupType, Tss2ResponseCode, Tss2ResponseCodeKind, tss,
};
use tss_esapi::handles::{KeyHandle, ObjectHandle, SessionHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    CapabilityData, Digest, EccPoint, KeyedHashScheme, PcrSelectionList, PcrSelectionListBuilder,
    PcrSlot, Private, Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters,
    SensitiveData, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, TctiNameConf};
use zeroize::Zeroizing;

use super::{BackendKind, KeyBackend};
use crate::crypto::{KEY_LEN, SecretKey};
use crate::error::{Error, Result};

/// Version of the sealed-blob layout below.
const BLOB_V1: u8 = 1;

/// A set of PCRs in one bank, e.g. `sha256:7` or `sha256:0,2,4,7`.
///
/// Production binds PCR 7 (Secure Boot state) or a measured-boot set; PCR 16
/// (the debug PCR, resettable by anyone) suits tests only.
#[derive(Clone, PartialEq, Eq)]
pub struct PcrSelection {
    bank: Bank,
    /// Bit i set = PCR i selected (PCRs 0..=23).
    mask: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bank {
    Sha1,
    Sha256,
    Sha384,
}

impl Bank {
    fn name(self) -> &'static str {
        match self {
            Bank::Sha1 => "sha1",
            Bank::Sha256 => "sha256",
            Bank::Sha384 => "sha384",
        }
    }

    fn alg(self) -> HashingAlgorithm {
        match self {
            Bank::Sha1 => HashingAlgorithm::Sha1,
            Bank::Sha256 => HashingAlgorithm::Sha256,
            Bank::Sha384 => HashingAlgorithm::Sha384,
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Bank::Sha1 => 1,
            Bank::Sha256 => 2,
            Bank::Sha384 => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Bank::Sha1),
            2 => Some(Bank::Sha256),
            3 => Some(Bank::Sha384),
            _ => None,
        }
    }
}

impl FromStr for PcrSelection {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidPcrSelection(s.to_owned());
        let (bank, list) = s.split_once(':').ok_or_else(bad)?;
        let bank = match bank.trim() {
            "sha1" => Bank::Sha1,
            "sha256" => Bank::Sha256,
            "sha384" => Bank::Sha384,
            _ => return Err(bad()),
        };
        let mut mask = 0u32;
        for item in list.split(',') {
            let index: u32 = item.trim().parse().map_err(|_| bad())?;
            if index > 23 {
                return Err(bad());
            }
            mask |= 1 << index;
        }
        Ok(PcrSelection { bank, mask })
    }
}

impl fmt::Display for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = (0..24)
            .filter(|i| self.mask & (1 << i) != 0)
            .map(|i| i.to_string())
            .collect();
        write!(f, "{}:{}", self.bank.name(), list.join(","))
    }
}

impl fmt::Debug for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PcrSelection({self})")
    }
}

impl PcrSelection {
    fn to_tss(&self) -> Result<PcrSelectionList> {
        let slots = (0..24)
            .filter(|i| self.mask & (1 << i) != 0)
            .map(|i| PcrSlot::try_from(1u32 << i))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| tpm_err("PCR selection", e))?;
        PcrSelectionListBuilder::new()
            .with_selection(self.bank.alg(), &slots)
            .build()
            .map_err(|e| tpm_err("PCR selection", e))
    }
}

/// Seals the KEK to a TPM under a PCR policy.
pub struct TpmBackend {
    tcti: String,
    pcrs: PcrSelection,
}

impl fmt::Debug for TpmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmBackend")
            .field("tcti", &self.tcti)
            .field("pcrs", &self.pcrs)
            .finish()
    }
}

impl TpmBackend {
    /// A backend reaching the TPM through `tcti` (`device:/dev/tpmrm0`,
    /// `swtpm:host=127.0.0.1,port=2321`, ...) that seals new keys to `pcrs`.
    /// Keys sealed earlier are unsealed with the selection they were sealed to.
    ///
    /// Checks that the TPM answers, so a wrong TCTI fails here, at start-up.
    pub fn new(tcti: &str, pcrs: PcrSelection) -> Result<Self> {
        let backend = TpmBackend {
            tcti: tcti.to_owned(),
            pcrs,
        };
        drop(backend.connect()?);
        Ok(backend)
    }

    fn connect(&self) -> Result<Context> {
        let conf = TctiNameConf::from_str(&self.tcti).map_err(|e| Error::InvalidTcti {
            tcti: self.tcti.clone(),
            detail: e.to_string(),
        })?;
        let mut ctx = Context::new(conf).map_err(|e| Error::Tpm {
            operation: "connect",
            detail: format!("cannot reach the TPM at `{}`: {e}", self.tcti),
        })?;
        // swtpm with `startup-clear`, and the kernel for /dev/tpm*, have
        // already started the TPM; a second Startup answers "initialize".
        match ctx.startup(StartupType::Clear) {
            Ok(()) => {}
            Err(e) if tpm_rc_is(&e, Tss2ResponseCodeKind::Initialize) => {}
            Err(e) => return Err(tpm_err("startup", e)),
        }
        flush_stale_transients(&mut ctx)?;
        Ok(ctx)
    }
}

impl KeyBackend for TpmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tpm
    }

    fn seal(&mut self, kek: &SecretKey) -> Result<Vec<u8>> {
        let mut ctx = self.connect()?;
        let primary = create_primary(&mut ctx)?;
        let result = seal_under(&mut ctx, primary, &self.pcrs, kek);
        flush(&mut ctx, primary.into());
        let (public, private) = result?;
        let public = public.marshall().map_err(|e| tpm_err("seal", e))?;
        encode_blob(&self.pcrs, &public, private.value())
    }

    fn unseal(&mut self, sealed: &[u8]) -> Result<SecretKey> {
        let (pcrs, public, private) = decode_blob(sealed)?;
        let public = Public::unmarshall(public).map_err(|_| Error::tampered("sealed key"))?;
        let private = Private::try_from(private).map_err(|_| Error::tampered("sealed key"))?;
        let mut ctx = self.connect()?;
        let primary = create_primary(&mut ctx)?;
        let result = unseal_under(&mut ctx, primary, &pcrs, public, private);
        flush(&mut ctx, primary.into());
        result
    }
}

/// The storage primary's template. It must never change: the key is
/// re-derived from it (and the TPM's owner seed) at every use, and a
/// different template is a different key that cannot load our objects.
fn primary_template() -> Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_decrypt(true)
        .with_restricted(true)
        // Its auth is empty; exempt it from dictionary-attack lockout so a
        // crashed client cannot lock the appliance out of its own keys.
        .with_no_da(true)
        .build()
        .map_err(|e| tpm_err("primary template", e))?;
    let ecc = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(|e| tpm_err("primary template", e))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(ecc)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| tpm_err("primary template", e))
}

fn create_primary(ctx: &mut Context) -> Result<KeyHandle> {
    let template = primary_template()?;
    ctx.execute_with_nullauth_session(|c| {
        c.create_primary(Hierarchy::Owner, template, None, None, None, None)
    })
    .map(|r| r.key_handle)
    .map_err(|e| tpm_err("create primary key", e))
}

/// The policy digest for "these PCRs hold the values they hold now".
fn pcr_policy_digest(ctx: &mut Context, pcrs: &PcrSelectionList) -> Result<Digest> {
    let session = start_session(ctx, None, SessionType::Trial)?;
    let result = PolicySession::try_from(session)
        .and_then(|policy| {
            ctx.policy_pcr(policy, Digest::default(), pcrs.clone())?;
            ctx.policy_get_digest(policy)
        })
        .map_err(|e| tpm_err("compute PCR policy", e));
    flush_session(ctx, session);
    result
}

fn seal_under(
    ctx: &mut Context,
    primary: KeyHandle,
    pcrs: &PcrSelection,
    kek: &SecretKey,
) -> Result<(Public, Private)> {
    let policy = pcr_policy_digest(ctx, &pcrs.to_tss()?)?;
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        // Off on purpose: with it on, the empty password unseals and the PCR
        // policy is bypassed.
        .with_user_with_auth(false)
        .with_admin_with_policy(true)
        .with_no_da(true)
        .build()
        .map_err(|e| tpm_err("seal", e))?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(policy)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(|e| tpm_err("seal", e))?;
    let data = SensitiveData::try_from(kek.expose().to_vec()).map_err(|e| tpm_err("seal", e))?;

    let session = start_session(ctx, Some(primary), SessionType::Hmac)?;
    let result = set_encryption(ctx, session, true, false)
        .and_then(|()| {
            ctx.execute_with_session(Some(session), |c| {
                c.create(primary, public, None, Some(data), None, None)
            })
            .map_err(|e| tpm_err("seal", e))
        })
        .map(|r| (r.out_public, r.out_private));
    flush_session(ctx, session);
    result
}

fn unseal_under(
    ctx: &mut Context,
    primary: KeyHandle,
    pcrs: &PcrSelection,
    public: Public,
    private: Private,
) -> Result<SecretKey> {
    let object = ctx
        .execute_with_nullauth_session(|c| c.load(primary, private, public))
        .map_err(|e| {
            if tpm_rc_is(&e, Tss2ResponseCodeKind::Integrity) {
                // The blob's integrity key derives from the primary, which
                // derives from this TPM's owner seed: another TPM (or a
                // cleared one) cannot load it.
                Error::ForeignDevice
            } else {
                tpm_err("load sealed key", e)
            }
        })?;
    let result = unseal_object(ctx, primary, object, pcrs);
    flush(ctx, object.into());
    result
}

fn unseal_object(
    ctx: &mut Context,
    primary: KeyHandle,
    object: KeyHandle,
    pcrs: &PcrSelection,
) -> Result<SecretKey> {
    let selection = pcrs.to_tss()?;
    let session = start_session(ctx, Some(primary), SessionType::Policy)?;
    let result = set_encryption(ctx, session, false, true).and_then(|()| {
        let policy = PolicySession::try_from(session).map_err(|e| tpm_err("unseal", e))?;
        ctx.execute_without_session(|c| c.policy_pcr(policy, Digest::default(), selection))
            .map_err(|e| tpm_err("unseal", e))?;
        ctx.execute_with_session(Some(session), |c| c.unseal(object.into()))
            .map_err(|e| {
                if tpm_rc_is(&e, Tss2ResponseCodeKind::PolicyFail) {
                    Error::PcrMismatch {
                        pcrs: pcrs.to_string(),
                    }
                } else {
                    tpm_err("unseal", e)
                }
            })
    });
    flush_session(ctx, session);
    let data = result?;
    let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(data.value().to_vec());
    SecretKey::from_slice(&bytes).ok_or_else(|| Error::Tpm {
        operation: "unseal",
        detail: format!(
            "sealed object holds {} bytes, expected {KEY_LEN}",
            bytes.len()
        ),
    })
}

/// A session with AES-128-CFB parameter encryption, salted with `salt_key`
/// so its session key is unknown to anyone watching the TPM channel.
fn start_session(
    ctx: &mut Context,
    salt_key: Option<KeyHandle>,
    kind: SessionType,
) -> Result<AuthSession> {
    ctx.start_auth_session(
        salt_key,
        None,
        None,
        kind,
        SymmetricDefinition::AES_128_CFB,
        HashingAlgorithm::Sha256,
    )
    .map_err(|e| tpm_err("start session", e))?
    .ok_or_else(|| Error::Tpm {
        operation: "start session",
        detail: "the TPM returned no session".into(),
    })
}

/// `decrypt`: the first command parameter travels encrypted; `encrypt`: the
/// first response parameter does.
fn set_encryption(
    ctx: &mut Context,
    session: AuthSession,
    decrypt: bool,
    encrypt: bool,
) -> Result<()> {
    let (attributes, mask) = SessionAttributesBuilder::new()
        .with_continue_session(true)
        .with_decrypt(decrypt)
        .with_encrypt(encrypt)
        .build();
    ctx.tr_sess_set_attributes(session, attributes, mask)
        .map_err(|e| tpm_err("set session attributes", e))
}

fn flush_session(ctx: &mut Context, session: AuthSession) {
    flush(ctx, SessionHandle::from(session).into());
}

/// Best-effort flush: a failure leaves a slot used until the TPM restarts,
/// and the next connection's stale-handle sweep retries it.
fn flush(ctx: &mut Context, handle: ObjectHandle) {
    if let Err(e) = ctx.flush_context(handle) {
        tracing::warn!(error = %e, "could not flush a TPM handle");
    }
}

/// Flushes transient objects left by a process that died mid-operation.
/// Without a resource manager (swtpm, /dev/tpm0) they would stay loaded and
/// exhaust the TPM's few object slots. Under /dev/tpmrm0 the list is empty.
fn flush_stale_transients(ctx: &mut Context) -> Result<()> {
    let (data, _more) = ctx
        .get_capability(CapabilityType::Handles, tss::TPM2_TRANSIENT_FIRST, 64)
        .map_err(|e| tpm_err("list transient objects", e))?;
    let CapabilityData::Handles(handles) = data else {
        return Ok(());
    };
    for handle in handles.iter() {
        if let TpmHandle::Transient(_) = handle {
            match ctx.tr_from_tpm_public(*handle) {
                Ok(object) => flush(ctx, object),
                Err(e) => tracing::warn!(error = %e, "could not flush a stale TPM object"),
            }
        }
    }
    Ok(())
}

fn encode_blob(pcrs: &PcrSelection, public: &[u8], private: &[u8]) -> Result<Vec<u8>> {
    let too_large = |len| Error::TooLarge {
        what: "TPM object",
        len,
        limit: usize::from(u16::MAX),
    };
    let public_len = u16::try_from(public.len()).map_err(|_| too_large(public.len()))?;
    let private_len = u16::try_from(private.len()).map_err(|_| too_large(private.len()))?;
    let mut out = Vec::with_capacity(10 + public.len() + private.len());
    out.push(BLOB_V1);
    out.push(pcrs.bank.to_byte());
    out.extend_from_slice(&pcrs.mask.to_be_bytes());
    out.extend_from_slice(&public_len.to_be_bytes());
    out.extend_from_slice(public);
    out.extend_from_slice(&private_len.to_be_bytes());
    out.extend_from_slice(private);
    Ok(out)
}

fn decode_blob(bytes: &[u8]) -> Result<(PcrSelection, &[u8], &[u8])> {
    let bad = || Error::tampered("sealed key");
    let (&version, rest) = bytes.split_first().ok_or_else(bad)?;
    if version != BLOB_V1 {
        return Err(Error::UnsupportedFormat {
            what: "TPM sealed key",
            version,
        });
    }
    let (&bank, rest) = rest.split_first().ok_or_else(bad)?;
    let bank = Bank::from_byte(bank).ok_or_else(bad)?;
    let (mask, rest) = rest.split_at_checked(4).ok_or_else(bad)?;
    let mask = u32::from_be_bytes(mask.try_into().map_err(|_| bad())?);
    if mask == 0 || mask >> 24 != 0 {
        return Err(bad());
    }
    let (public, rest) = take_u16_prefixed(rest).ok_or_else(bad)?;
    let (private, rest) = take_u16_prefixed(rest).ok_or_else(bad)?;
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok((PcrSelection { bank, mask }, public, private))
}

fn take_u16_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_at_checked(2)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    rest.split_at_checked(len)
}

/// Whether `e` is a TPM-layer response code of `kind`. (tss-esapi's `kind()`
/// ignores the layer byte, so a resource-manager or ESAPI code with the same
/// low bits would otherwise match.)
fn tpm_rc_is(e: &tss_esapi::Error, kind: Tss2ResponseCodeKind) -> bool {
    let tss_esapi::Error::Tss2Error(rc) = e else {
        return false;
    };
    let raw = match rc {
        Tss2ResponseCode::Success => 0,
        Tss2ResponseCode::FormatZero(z) => z.0,
        Tss2ResponseCode::FormatOne(o) => o.0,
    };
    raw >> 16 == 0 && rc.kind() == Some(kind)
}

fn tpm_err(operation: &'static str, e: tss_esapi::Error) -> Error {
    Error::Tpm {
        operation,
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pcr_selection_parses_and_prints() {
        let s: PcrSelection = "sha256:0, 2,7".parse().unwrap();
        assert_eq!(s.to_string(), "sha256:0,2,7");
        for bad in ["", "sha256", "sha256:", "md5:7", "sha256:24", "sha256:x"] {
            assert!(bad.parse::<PcrSelection>().is_err(), "{bad}");
        }
    }

    /// The guarantee behind `userWithAuth` off: the sealed KEK cannot be
    /// unsealed with the object's (empty) password, only through the PCR
    /// policy. With the attribute on, both calls below would succeed.
    #[test]
    fn the_empty_password_cannot_unseal_the_kek() {
        let dir = tempfile::tempdir().unwrap();
        let tpm = test_support::Swtpm::start(dir.path());
        let mut backend = TpmBackend::new(&tpm.tcti(), "sha256:16".parse().unwrap()).unwrap();
        let kek = SecretKey::random().unwrap();
        let blob = backend.seal(&kek).unwrap();
        let (_, public, private) = decode_blob(&blob).unwrap();

        let mut ctx = backend.connect().unwrap();
        let primary = create_primary(&mut ctx).unwrap();
        let object = ctx
            .execute_with_nullauth_session(|c| {
                c.load(
                    primary,
                    Private::try_from(private).unwrap(),
                    Public::unmarshall(public).unwrap(),
                )
            })
            .unwrap();
        let by_hmac = ctx.execute_with_nullauth_session(|c| c.unseal(object.into()));
        assert!(
            by_hmac.is_err(),
            "an empty-auth HMAC session unsealed the KEK"
        );
        let by_password =
            ctx.execute_with_session(Some(AuthSession::Password), |c| c.unseal(object.into()));
        assert!(by_password.is_err(), "the empty password unsealed the KEK");
        flush(&mut ctx, object.into());
        flush(&mut ctx, primary.into());
        drop(ctx);

        assert_eq!(backend.unseal(&blob).unwrap().expose(), kek.expose());
    }

    proptest! {
        /// The sealed-blob parser takes bytes from disk: it must never panic.
        #[test]
        fn decode_blob_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_blob(&bytes);
        }

        #[test]
        fn blob_round_trips(public in proptest::collection::vec(any::<u8>(), 0..200),
                            private in proptest::collection::vec(any::<u8>(), 0..200)) {
            let pcrs: PcrSelection = "sha256:7,16".parse().unwrap();
            let blob = encode_blob(&pcrs, &public, &private).unwrap();
            let (p, a, b) = decode_blob(&blob).unwrap();
            prop_assert_eq!(p, pcrs);
            prop_assert_eq!(a, &public[..]);
            prop_assert_eq!(b, &private[..]);
        }
    }
}
