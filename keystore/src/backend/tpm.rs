//! The TPM 2.0 backend (tss-esapi 7.x, any TCTI).
//!
//! Each store has its own **root storage key** (ECC P-256), created inside
//! the TPM under the owner hierarchy's primary and made persistent at a free
//! handle of [`ROOT_HANDLES`]; its private part exists only in the TPM's
//! non-volatile memory, never in a file. The KEK is sealed as a keyed-hash
//! object under that root, and the appliance's TLS identity key (ECDSA
//! P-256, `fixedTPM`, `fixedParent`, `sensitiveDataOrigin`) is created under
//! it too. Evicting the root ([`KeyBackend::destroy`], the factory reset) is
//! crypto-shredding: every blob ever wrapped under it, on this disk or any
//! copy of it, can never be loaded again. Blobs record the root's handle and
//! TPM name, and a root whose name differs is refused as another device's.
//! (Format 1 blobs, sealed directly under the primary, which is re-derived
//! from a fixed template, still unseal; the next KEK rotation moves them
//! under a root.)
//!
//! The sealed KEK object's authorisation is a PolicyPCR digest with
//! `userWithAuth` off: with it on, anyone could unseal with the (empty)
//! password and the PCR policy would be silently bypassed.
//!
//! Both directions travel encrypted between us and the TPM: sealing uses an
//! HMAC session salted with the parent key and command parameter
//! encryption; unsealing uses a salted policy session with response
//! encryption. A bus or socket sniffer sees no key material.
//!
//! Each operation opens its own TPM connection and flushes every transient
//! object and session it created: swtpm serves one client at a time and has
//! few object slots, and a connection held open would keep other tools out.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use tss_esapi::attributes::{ObjectAttributes, ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::{
    CapabilityType, SessionType, StartupType, Tss2ResponseCode, Tss2ResponseCodeKind, tss,
};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, SessionHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    CapabilityData, Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket, KeyedHashScheme,
    PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Private, Public, PublicBuilder,
    PublicEccParameters, PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData,
    Signature, SignatureScheme, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::{Context, TctiNameConf};
use zeroize::Zeroizing;

use super::{BackendKind, IdentityKey, KeyBackend};
use crate::crypto::{KEY_LEN, SecretKey};
use crate::error::{Error, Result};

/// Sealed-blob layout 1: the KEK object under the fixed-template primary.
const BLOB_V1: u8 = 1;
/// Sealed-blob layout 2: the KEK object under the store's persistent root.
const BLOB_V2: u8 = 2;
/// Identity-key blob layout.
const IDENTITY_V1: u8 = 1;

/// The persistent handles a store's root key may take (in the owner's
/// range, 0x81000000..0x817FFFFF); the first free one is used, so several
/// stores can share a TPM.
pub const ROOT_HANDLES: std::ops::Range<u32> = 0x8100_5A00..0x8100_5B00;

/// A store's persistent root key: its handle and its TPM name (a digest of
/// its public area, so another key put at the same handle is told apart).
#[derive(Clone, PartialEq, Eq, Debug)]
struct Root {
    handle: u32,
    name: Vec<u8>,
}

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
    /// The store's root key, once a seal or unseal has found or made it.
    root: Option<Root>,
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
            root: None,
        };
        drop(backend.connect()?);
        Ok(backend)
    }

    fn connect(&self) -> Result<Context> {
        connect(&self.tcti)
    }
}

fn connect(tcti: &str) -> Result<Context> {
    let conf = TctiNameConf::from_str(tcti).map_err(|e| Error::InvalidTcti {
        tcti: tcti.to_owned(),
        detail: e.to_string(),
    })?;
    let mut ctx = Context::new(conf).map_err(|e| Error::Tpm {
        operation: "connect",
        detail: format!("cannot reach the TPM at `{tcti}`: {e}"),
    })?;
    // swtpm with `startup-clear`, and the kernel for /dev/tpm*, have
    // already started the TPM; a second Startup answers "initialize".
    match ctx.startup(StartupType::Clear) {
        Ok(()) => {}
        Err(e) if tpm_rc_is(&e, Tss2ResponseCodeKind::Initialize) => {}
        Err(e) => return Err(tpm_err("startup", e)),
    }
    flush_stale_handles(&mut ctx)?;
    Ok(ctx)
}

impl KeyBackend for TpmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tpm
    }

    fn seal(&mut self, kek: &SecretKey) -> Result<Vec<u8>> {
        let mut ctx = self.connect()?;
        let (root, handle) = match &self.root {
            Some(root) => (root.clone(), open_root(&mut ctx, root)?),
            // A new store (or one sealed in format 1): a root of its own.
            None => create_root(&mut ctx)?,
        };
        let (public, private) = seal_under(&mut ctx, handle, &self.pcrs, kek)?;
        self.root = Some(root.clone());
        let public = public.marshall().map_err(|e| tpm_err("seal", e))?;
        encode_blob(&self.pcrs, Some(&root), &public, private.value())
    }

    fn unseal(&mut self, sealed: &[u8]) -> Result<SecretKey> {
        let blob = decode_blob(sealed)?;
        let public = Public::unmarshall(blob.public).map_err(|_| Error::tampered("sealed key"))?;
        let private = Private::try_from(blob.private).map_err(|_| Error::tampered("sealed key"))?;
        let mut ctx = self.connect()?;
        match blob.root {
            Some(root) => {
                let handle = open_root(&mut ctx, &root)?;
                let kek = unseal_under(&mut ctx, handle, &blob.pcrs, public, private)?;
                self.root = Some(root);
                Ok(kek)
            }
            None => {
                let primary = create_primary(&mut ctx)?;
                let result = unseal_under(&mut ctx, primary, &blob.pcrs, public, private);
                flush(&mut ctx, primary.into());
                result
            }
        }
    }

    fn create_identity_key(&mut self) -> Result<Vec<u8>> {
        let root = self.root.clone().ok_or_else(|| Error::Tpm {
            operation: "create identity key",
            detail: "the store has no root key in the TPM yet (open the store first, or \
                     rotate the key-encryption key of a store sealed in format 1)"
                .into(),
        })?;
        let mut ctx = self.connect()?;
        let handle = open_root(&mut ctx, &root)?;
        let created = ctx
            .execute_with_nullauth_session(|c| {
                c.create(handle, identity_template()?, None, None, None, None)
            })
            .map_err(|e| tpm_err("create identity key", e))?;
        let public = created
            .out_public
            .marshall()
            .map_err(|e| tpm_err("create identity key", e))?;
        encode_identity(&root, &public, created.out_private.value())
    }

    fn open_identity_key(&self, blob: &[u8]) -> Result<Arc<dyn IdentityKey>> {
        let (root, public, private) = decode_identity(blob)?;
        let public = Public::unmarshall(public).map_err(|_| Error::tampered("identity key"))?;
        let private = Private::try_from(private).map_err(|_| Error::tampered("identity key"))?;
        let point = public_point(&public).ok_or_else(|| Error::tampered("identity key"))?;
        Ok(Arc::new(TpmIdentityKey {
            tcti: self.tcti.clone(),
            root,
            public,
            private,
            point,
            tpm: Mutex::new(()),
        }))
    }

    fn destroy(&mut self, sealed: &[u8]) -> Result<bool> {
        let Some(root) = decode_blob(sealed)?.root else {
            tracing::warn!(
                "this store's KEK was sealed in format 1, under the TPM's primary key, which \
                 cannot be destroyed without clearing the TPM; only the files are removed"
            );
            return Ok(false);
        };
        let mut ctx = self.connect()?;
        let handle = match open_root(&mut ctx, &root) {
            Ok(handle) => handle,
            Err(Error::ForeignDevice) => return Ok(false),
            Err(e) => return Err(e),
        };
        evict(&mut ctx, handle.into(), root.handle)?;
        self.root = None;
        Ok(true)
    }
}

/// The TLS identity key: its TPM blobs, loaded under the store's root for
/// each signature and flushed after it.
struct TpmIdentityKey {
    tcti: String,
    root: Root,
    public: Public,
    private: Private,
    point: Vec<u8>,
    /// One signature at a time from this process: the TPM serves one
    /// command at a time anyway, and swtpm one connection at a time.
    tpm: Mutex<()>,
}

impl fmt::Debug for TpmIdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmIdentityKey")
            .field("tcti", &self.tcti)
            .field("root", &format_args!("{:#x}", self.root.handle))
            .finish_non_exhaustive()
    }
}

impl IdentityKey for TpmIdentityKey {
    fn public_point(&self) -> &[u8] {
        &self.point
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let digest = ring::digest::digest(&ring::digest::SHA256, message);
        let digest = Digest::try_from(digest.as_ref()).map_err(|e| tpm_err("sign", e))?;
        let _one = self.tpm.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ctx = connect(&self.tcti)?;
        let root = open_root(&mut ctx, &self.root)?;
        // Plain password authorisation (empty): nothing secret crosses
        // here, and no TPM session is opened that a crash could leave.
        let key = ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.load(root, self.private.clone(), self.public.clone())
            })
            .map_err(|e| tpm_err("load identity key", e))?;
        let signed = null_ticket().and_then(|ticket| {
            ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.sign(
                    key,
                    digest,
                    SignatureScheme::EcDsa {
                        hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
                    },
                    ticket,
                )
            })
        });
        flush(&mut ctx, key.into());
        match signed.map_err(|e| tpm_err("sign", e))? {
            Signature::EcDsa(s) => Ok(ecdsa_der(s.signature_r().value(), s.signature_s().value())),
            _ => Err(Error::Tpm {
                operation: "sign",
                detail: "the TPM returned a signature of another kind".into(),
            }),
        }
    }

    fn holder(&self) -> &'static str {
        "in the TPM (not exportable)"
    }
}

/// The "no ticket" validation a sign command takes for an unrestricted key.
fn null_ticket() -> std::result::Result<HashcheckTicket, tss_esapi::Error> {
    HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: tss::TPM2_ST_HASHCHECK,
        hierarchy: tss::TPM2_RH_NULL,
        digest: Default::default(),
    })
}

/// The identity key's template: ECDSA P-256 over SHA-256, made inside the
/// TPM (`sensitiveDataOrigin`) and never duplicable (`fixedTPM`,
/// `fixedParent`), signing only.
fn identity_template() -> std::result::Result<Public, tss_esapi::Error> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_no_da(true)
        .build()?;
    let ecc = PublicEccParametersBuilder::new_unrestricted_signing_key(
        EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
        EccCurve::NistP256,
    )
    .build()?;
    ecc_public(attributes, ecc)
}

/// An ECC P-256 key's public template: SHA-256 names, the unique point
/// left for the TPM to fill.
fn ecc_public(
    attributes: ObjectAttributes,
    ecc: PublicEccParameters,
) -> std::result::Result<Public, tss_esapi::Error> {
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(ecc)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

/// The uncompressed SEC1 point of an ECC P-256 public area.
fn public_point(public: &Public) -> Option<Vec<u8>> {
    let Public::Ecc { unique, .. } = public else {
        return None;
    };
    let (x, y) = (unique.x().value(), unique.y().value());
    if x.len() > 32 || y.len() > 32 {
        return None;
    }
    let mut point = vec![0u8; 65];
    point[0] = 4;
    point[33 - x.len()..33].copy_from_slice(x);
    point[65 - y.len()..].copy_from_slice(y);
    Some(point)
}

/// An ASN.1 DER `Ecdsa-Sig-Value` (SEQUENCE of two INTEGERs) from the raw
/// big-endian r and s the TPM returns.
fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn integer(out: &mut Vec<u8>, v: &[u8]) {
        let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
        let v = &v[start..];
        let pad = v.first().is_none_or(|&b| b & 0x80 != 0);
        out.push(0x02);
        out.push(u8::try_from(v.len() + usize::from(pad)).unwrap_or(u8::MAX));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }
    let mut body = Vec::with_capacity(72);
    integer(&mut body, &r[..r.len().min(66)]);
    integer(&mut body, &s[..s.len().min(66)]);
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(0x30);
    out.push(u8::try_from(body.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&body);
    out
}

/// Whether a persistent handle is taken.
fn persistent_exists(ctx: &mut Context, handle: u32) -> Result<bool> {
    let (data, _more) = ctx
        .get_capability(CapabilityType::Handles, handle, 1)
        .map_err(|e| tpm_err("list persistent objects", e))?;
    Ok(matches!(data, CapabilityData::Handles(list)
        if list.iter().any(|h| u32::from(*h) == handle)))
}

fn persistent(handle: u32) -> Result<PersistentTpmHandle> {
    PersistentTpmHandle::new(handle).map_err(|e| tpm_err("persistent handle", e))
}

/// The root at `root.handle`, if it is the one whose name was recorded.
fn open_root(ctx: &mut Context, root: &Root) -> Result<KeyHandle> {
    if !ROOT_HANDLES.contains(&root.handle) {
        return Err(Error::tampered("sealed key (root handle)"));
    }
    if !persistent_exists(ctx, root.handle)? {
        return Err(Error::ForeignDevice);
    }
    let object = ctx
        .tr_from_tpm_public(TpmHandle::Persistent(persistent(root.handle)?))
        .map_err(|e| tpm_err("open root key", e))?;
    let name = ctx
        .tr_get_name(object)
        .map_err(|e| tpm_err("open root key", e))?;
    if name.value() != root.name.as_slice() {
        return Err(Error::ForeignDevice);
    }
    Ok(object.into())
}

/// Creates a root storage key under the primary and makes it persistent at
/// the first free handle of [`ROOT_HANDLES`]. Its private blob is dropped:
/// the TPM's copy is the only one.
fn create_root(ctx: &mut Context) -> Result<(Root, KeyHandle)> {
    let mut free = None;
    for handle in ROOT_HANDLES {
        if !persistent_exists(ctx, handle)? {
            free = Some(handle);
            break;
        }
    }
    let handle = free.ok_or_else(|| Error::Tpm {
        operation: "create root key",
        detail: format!(
            "every persistent handle in {:#x}..{:#x} is taken",
            ROOT_HANDLES.start, ROOT_HANDLES.end
        ),
    })?;
    let primary = create_primary(ctx)?;
    let loaded = primary_template()
        .and_then(|template| {
            ctx.execute_with_nullauth_session(|c| {
                c.create(primary, template, None, None, None, None)
            })
            .map_err(|e| tpm_err("create root key", e))
        })
        .and_then(|created| {
            ctx.execute_with_nullauth_session(|c| {
                c.load(primary, created.out_private, created.out_public)
            })
            .map_err(|e| tpm_err("load root key", e))
        });
    flush(ctx, primary.into());
    let loaded = loaded?;
    let target = Persistent::Persistent(persistent(handle)?);
    let stored = ctx
        .execute_with_nullauth_session(|c| c.evict_control(Provision::Owner, loaded.into(), target))
        .map_err(|e| tpm_err("make root key persistent", e));
    flush(ctx, loaded.into());
    let stored = stored?;
    let name = ctx
        .tr_get_name(stored)
        .map_err(|e| tpm_err("make root key persistent", e))?;
    tracing::info!(
        handle = format_args!("{handle:#x}"),
        "root key created in the TPM"
    );
    Ok((
        Root {
            handle,
            name: name.value().to_vec(),
        },
        stored.into(),
    ))
}

/// Removes a persistent object from the TPM's non-volatile memory.
fn evict(ctx: &mut Context, object: ObjectHandle, handle: u32) -> Result<()> {
    let target = Persistent::Persistent(persistent(handle)?);
    ctx.execute_with_nullauth_session(|c| c.evict_control(Provision::Owner, object, target))
        .map(drop)
        .map_err(|e| tpm_err("destroy root key", e))
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
    ecc_public(attributes, ecc).map_err(|e| tpm_err("primary template", e))
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

/// Flushes transient objects and sessions left by a process that died
/// mid-operation. Without a resource manager (swtpm, /dev/tpm0) they would
/// stay loaded and exhaust the TPM's few slots (a TPM holds three loaded
/// sessions): seen as "out of memory for session contexts" after a few
/// `kill -9`s landed inside a TLS handshake's signature. Under /dev/tpmrm0
/// both lists are empty.
fn flush_stale_handles(ctx: &mut Context) -> Result<()> {
    for (first, what) in [
        (tss::TPM2_TRANSIENT_FIRST, "transient objects"),
        (tss::TPM2_LOADED_SESSION_FIRST, "sessions"),
    ] {
        let (data, _more) = ctx
            .get_capability(CapabilityType::Handles, first, 64)
            .map_err(|e| tpm_err("list stale handles", e))?;
        let CapabilityData::Handles(handles) = data else {
            continue;
        };
        for handle in handles.iter() {
            let stale = match handle {
                TpmHandle::Transient(_) => first == tss::TPM2_TRANSIENT_FIRST,
                TpmHandle::HmacSession(_)
                | TpmHandle::LoadedSession(_)
                | TpmHandle::PolicySession(_) => first == tss::TPM2_LOADED_SESSION_FIRST,
                _ => false,
            };
            if !stale {
                continue;
            }
            match ctx.tr_from_tpm_public(*handle) {
                Ok(object) => flush(ctx, object),
                Err(e) => tracing::warn!(error = %e, "could not flush stale TPM {what}"),
            }
        }
    }
    Ok(())
}

/// A decoded sealed-KEK blob.
struct SealedBlob<'a> {
    pcrs: PcrSelection,
    /// The root it was sealed under; none for format 1 (the primary).
    root: Option<Root>,
    public: &'a [u8],
    private: &'a [u8],
}

fn u16_len(what: &'static str, bytes: &[u8]) -> Result<[u8; 2]> {
    u16::try_from(bytes.len())
        .map(u16::to_be_bytes)
        .map_err(|_| Error::TooLarge {
            what,
            len: bytes.len(),
            limit: usize::from(u16::MAX),
        })
}

fn push_prefixed(out: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
    out.extend_from_slice(&u16_len("TPM object", bytes)?);
    out.extend_from_slice(bytes);
    Ok(())
}

fn push_root(out: &mut Vec<u8>, root: &Root) -> Result<()> {
    out.extend_from_slice(&root.handle.to_be_bytes());
    push_prefixed(out, &root.name)
}

fn take_root(bytes: &[u8]) -> Option<(Root, &[u8])> {
    let (handle, rest) = bytes.split_at_checked(4)?;
    let handle = u32::from_be_bytes(handle.try_into().ok()?);
    let (name, rest) = take_u16_prefixed(rest)?;
    if !ROOT_HANDLES.contains(&handle) || name.is_empty() {
        return None;
    }
    Some((
        Root {
            handle,
            name: name.to_vec(),
        },
        rest,
    ))
}

/// Format 2 with a root; format 1 (kept for the tests of old blobs) without.
fn encode_blob(
    pcrs: &PcrSelection,
    root: Option<&Root>,
    public: &[u8],
    private: &[u8],
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(48 + public.len() + private.len());
    out.push(if root.is_some() { BLOB_V2 } else { BLOB_V1 });
    out.push(pcrs.bank.to_byte());
    out.extend_from_slice(&pcrs.mask.to_be_bytes());
    if let Some(root) = root {
        push_root(&mut out, root)?;
    }
    push_prefixed(&mut out, public)?;
    push_prefixed(&mut out, private)?;
    Ok(out)
}

fn decode_blob(bytes: &[u8]) -> Result<SealedBlob<'_>> {
    let bad = || Error::tampered("sealed key");
    let (&version, rest) = bytes.split_first().ok_or_else(bad)?;
    if version != BLOB_V1 && version != BLOB_V2 {
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
    let (root, rest) = if version == BLOB_V2 {
        let (root, rest) = take_root(rest).ok_or_else(bad)?;
        (Some(root), rest)
    } else {
        (None, rest)
    };
    let (public, rest) = take_u16_prefixed(rest).ok_or_else(bad)?;
    let (private, rest) = take_u16_prefixed(rest).ok_or_else(bad)?;
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(SealedBlob {
        pcrs: PcrSelection { bank, mask },
        root,
        public,
        private,
    })
}

fn encode_identity(root: &Root, public: &[u8], private: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(48 + public.len() + private.len());
    out.push(IDENTITY_V1);
    push_root(&mut out, root)?;
    push_prefixed(&mut out, public)?;
    push_prefixed(&mut out, private)?;
    Ok(out)
}

fn decode_identity(bytes: &[u8]) -> Result<(Root, &[u8], &[u8])> {
    let bad = || Error::tampered("identity key");
    let (&version, rest) = bytes.split_first().ok_or_else(bad)?;
    if version != IDENTITY_V1 {
        return Err(Error::UnsupportedFormat {
            what: "TPM identity key",
            version,
        });
    }
    let (root, rest) = take_root(rest).ok_or_else(bad)?;
    let (public, rest) = take_u16_prefixed(rest).ok_or_else(bad)?;
    let (private, rest) = take_u16_prefixed(rest).ok_or_else(bad)?;
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok((root, public, private))
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
        let sealed = decode_blob(&blob).unwrap();

        let mut ctx = backend.connect().unwrap();
        let root = open_root(&mut ctx, sealed.root.as_ref().unwrap()).unwrap();
        let object = ctx
            .execute_with_nullauth_session(|c| {
                c.load(
                    root,
                    Private::try_from(sealed.private).unwrap(),
                    Public::unmarshall(sealed.public).unwrap(),
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
        drop(ctx);

        assert_eq!(backend.unseal(&blob).unwrap().expose(), kek.expose());
    }

    /// The identity key is made inside the TPM and can never leave it: its
    /// public area, as the TPM reports it, has fixedTPM and fixedParent (no
    /// duplication) and sensitiveDataOrigin (the TPM generated it). Its
    /// signatures verify under its public key, and once the root is
    /// destroyed nothing made under it loads: not the KEK, not the key.
    #[test]
    fn the_identity_key_lives_and_dies_in_the_tpm() {
        let dir = tempfile::tempdir().unwrap();
        let tpm = test_support::Swtpm::start(dir.path());
        let mut backend = TpmBackend::new(&tpm.tcti(), "sha256:16".parse().unwrap()).unwrap();
        let sealed = backend.seal(&SecretKey::random().unwrap()).unwrap();
        let blob = backend.create_identity_key().unwrap();
        let key = backend.open_identity_key(&blob).unwrap();

        let (root, public, private) = decode_identity(&blob).unwrap();
        let mut ctx = backend.connect().unwrap();
        let parent = open_root(&mut ctx, &root).unwrap();
        let loaded = ctx
            .execute_with_nullauth_session(|c| {
                c.load(
                    parent,
                    Private::try_from(private).unwrap(),
                    Public::unmarshall(public).unwrap(),
                )
            })
            .unwrap();
        let (reported, _, _) = ctx.read_public(loaded).unwrap();
        flush(&mut ctx, loaded.into());
        drop(ctx);
        let attributes = reported.object_attributes();
        assert!(attributes.fixed_tpm(), "fixedTPM");
        assert!(attributes.fixed_parent(), "fixedParent");
        assert!(attributes.sensitive_data_origin(), "sensitiveDataOrigin");
        assert!(attributes.sign_encrypt() && !attributes.decrypt());
        assert_eq!(public_point(&reported).unwrap(), key.public_point());

        let verifier = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            key.public_point(),
        );
        for i in 0..8u8 {
            let message = vec![i; 100 + usize::from(i)];
            let signature = key.sign(&message).unwrap();
            verifier.verify(&message, &signature).unwrap();
            assert!(verifier.verify(b"another message", &signature).is_err());
        }

        assert!(backend.destroy(&sealed).unwrap());
        assert!(matches!(key.sign(b"x"), Err(Error::ForeignDevice)));
        assert!(matches!(backend.unseal(&sealed), Err(Error::ForeignDevice)));
        assert!(!backend.destroy(&sealed).unwrap(), "destroyed twice");
    }

    /// Two stores on one TPM take two roots; destroying one leaves the other.
    #[test]
    fn stores_sharing_a_tpm_have_their_own_roots() {
        let dir = tempfile::tempdir().unwrap();
        let tpm = test_support::Swtpm::start(dir.path());
        let pcrs: PcrSelection = "sha256:16".parse().unwrap();
        let mut a = TpmBackend::new(&tpm.tcti(), pcrs.clone()).unwrap();
        let mut b = TpmBackend::new(&tpm.tcti(), pcrs.clone()).unwrap();
        let (ka, kb) = (SecretKey::random().unwrap(), SecretKey::random().unwrap());
        let (sa, sb) = (a.seal(&ka).unwrap(), b.seal(&kb).unwrap());
        assert_ne!(
            decode_blob(&sa).unwrap().root,
            decode_blob(&sb).unwrap().root
        );
        assert!(a.destroy(&sa).unwrap());
        let mut fresh = TpmBackend::new(&tpm.tcti(), pcrs).unwrap();
        assert_eq!(fresh.unseal(&sb).unwrap().expose(), kb.expose());
        assert!(matches!(fresh.unseal(&sa), Err(Error::ForeignDevice)));
    }

    /// A process killed inside an operation leaves its sessions loaded
    /// (swtpm has no resource manager); the next connection flushes them.
    /// Without that, a TPM's three session slots fill and every seal,
    /// unseal and signature fails. The crash is real: a child process
    /// (this test binary, running [`crash_holding_sessions`]) aborts with
    /// its sessions open.
    #[test]
    fn sessions_left_by_a_crash_are_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let tpm = test_support::Swtpm::start(dir.path());
        let mut backend = TpmBackend::new(&tpm.tcti(), "sha256:16".parse().unwrap()).unwrap();
        let kek = SecretKey::random().unwrap();
        let sealed = backend.seal(&kek).unwrap();
        let blob = backend.create_identity_key().unwrap();
        let key = backend.open_identity_key(&blob).unwrap();
        for _ in 0..3 {
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "backend::tpm::tests::crash_holding_sessions",
                    "--ignored",
                    "--quiet",
                ])
                .env("KEYSTORE_CRASH_TCTI", tpm.tcti())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(!status.success(), "the child did not crash");
            assert_eq!(backend.unseal(&sealed).unwrap().expose(), kek.expose());
            key.sign(b"after a crash").unwrap();
        }
    }

    /// The crashing child of [`sessions_left_by_a_crash_are_flushed`].
    #[test]
    #[ignore = "a child process of sessions_left_by_a_crash_are_flushed"]
    fn crash_holding_sessions() {
        let Ok(tcti) = std::env::var("KEYSTORE_CRASH_TCTI") else {
            return;
        };
        let mut ctx = connect(&tcti).unwrap();
        for _ in 0..3 {
            start_session(&mut ctx, None, SessionType::Hmac).unwrap();
        }
        // No drop, no flush: what kill -9 leaves.
        std::process::abort();
    }

    #[test]
    fn ecdsa_signatures_are_minimal_der() {
        let high = [0x80u8; 32];
        let der = ecdsa_der(&high, &[0, 0, 1]);
        assert_eq!(der[..4], [0x30, 38, 0x02, 33]);
        assert_eq!(der[4], 0, "a high bit needs a leading zero");
        assert_eq!(der[37..], [0x02, 1, 1], "leading zeroes are dropped");
        assert_eq!(ecdsa_der(&[], &[0]), [0x30, 6, 2, 1, 0, 2, 1, 0]);
    }

    proptest! {
        /// The sealed-blob parser takes bytes from disk: it must never panic.
        #[test]
        fn decode_blob_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_blob(&bytes);
        }

        #[test]
        fn decode_identity_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_identity(&bytes);
        }

        #[test]
        fn blob_round_trips(public in proptest::collection::vec(any::<u8>(), 0..200),
                            private in proptest::collection::vec(any::<u8>(), 0..200),
                            name in proptest::collection::vec(any::<u8>(), 1..40),
                            v2 in any::<bool>()) {
            let pcrs: PcrSelection = "sha256:7,16".parse().unwrap();
            let root = Root { handle: ROOT_HANDLES.start + 3, name };
            let blob = encode_blob(&pcrs, v2.then_some(&root), &public, &private).unwrap();
            let decoded = decode_blob(&blob).unwrap();
            prop_assert_eq!(decoded.pcrs, pcrs);
            prop_assert_eq!(decoded.root, v2.then(|| root.clone()));
            prop_assert_eq!(decoded.public, &public[..]);
            prop_assert_eq!(decoded.private, &private[..]);
            let identity = encode_identity(&root, &public, &private).unwrap();
            let (r, a, b) = decode_identity(&identity).unwrap();
            prop_assert_eq!(r, root);
            prop_assert_eq!(a, &public[..]);
            prop_assert_eq!(b, &private[..]);
        }
    }
}
