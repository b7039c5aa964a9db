//! The keystore's behavioural suite, run against both backends: the TPM
//! (a real swtpm per test) and the insecure software backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;

use base64::Engine;
use common::{Fixture, Kind};
use keystore::{CHUNK_LEN, Error};

both_backends!(records_survive_a_reboot, |fx| {
    let store = fx.open();
    let tree = store.tree("grants", "metadata").unwrap();
    tree.put(b"client/alice", b"models=digits").unwrap();
    let generation = store.kek_generation();
    drop((tree, store));

    fx.reboot();

    let store = fx.open();
    assert_eq!(store.kek_generation(), generation);
    let tree = store.tree("grants", "metadata").unwrap();
    assert_eq!(
        tree.get(b"client/alice").unwrap().unwrap().as_slice(),
        b"models=digits"
    );
    assert_eq!(tree.get(b"client/bob").unwrap(), None);
});

both_backends!(another_device_cannot_open_the_store, |fx| {
    let store = fx.open();
    store.tree("t", "p").unwrap().put(b"id", b"v").unwrap();
    drop(store);

    // A new swtpm state directory is another TPM with other seeds; a new
    // root key file is another software device.
    let other = Fixture::new(fx.kind);
    let err = keystore::Store::open(&fx.data_dir(), other.backend()).unwrap_err();
    assert!(matches!(err, Error::ForeignDevice), "{err:?}");
    assert!(
        err.to_string().contains("sealed by a different TPM"),
        "{err}"
    );
});

both_backends!(
    a_flipped_byte_fails_authentication_for_that_record_only,
    |fx| {
        let store = fx.open();
        let tree = store.tree("records", "metadata").unwrap();
        for i in 0..10u8 {
            tree.put(&[b'r', i], &[i; 40]).unwrap();
        }
        drop((tree, store));

        // Version byte, key id, nonce, ciphertext, tag.
        let record_len = 1 + 16 + 12 + 2 + 2 + 40 + 16;
        for position in [0, 1, 10, 17, 30, 33, 50, record_len - 1] {
            let flipped = flip_record_byte(&fx.data_dir(), position);
            let store = fx.open();
            let tree = store.tree("records", "metadata").unwrap();
            let mut damaged = 0;
            for i in 0..10u8 {
                match tree.get(&[b'r', i]) {
                    Ok(Some(v)) => assert_eq!(v.as_slice(), &[i; 40]),
                    Err(Error::Tampered { .. }) => damaged += 1,
                    other => panic!("byte {position}: unexpected {other:?}"),
                }
            }
            assert_eq!(
                damaged, 1,
                "byte {position}: exactly the flipped record fails"
            );
            drop((tree, store));
            flip_record_byte_back(&fx.data_dir(), &flipped, position);
        }

        let store = fx.open();
        let tree = store.tree("records", "metadata").unwrap();
        assert_eq!(tree.iter().filter(|r| r.is_ok()).count(), 10);
    }
);

both_backends!(
    a_ciphertext_moved_to_another_record_does_not_decrypt,
    |fx| {
        let store = fx.open();
        let tree = store.tree("records", "metadata").unwrap();
        tree.put(b"a", b"value of a").unwrap();
        tree.put(b"b", b"value of b").unwrap();
        drop((tree, store));

        with_record_tree(&fx.data_dir(), |t| {
            let entries: Vec<_> = t.iter().map(|e| e.unwrap()).collect();
            t.insert(&entries[0].0, entries[1].1.clone()).unwrap();
        });

        let store = fx.open();
        let tree = store.tree("records", "metadata").unwrap();
        let results = [tree.get(b"a"), tree.get(b"b")];
        assert_eq!(
            results
                .iter()
                .filter(|r| matches!(r, Err(Error::Tampered { .. })))
                .count(),
            1
        );
    }
);

both_backends!(no_plaintext_reaches_the_disk, |fx| {
    let mut marker = [0u8; 32];
    getrandom(&mut marker);
    let marker_hex = hex::encode(marker);
    let tree_name = format!("tree-{marker_hex}");
    let record_id = format!("client/{marker_hex}");

    let store = fx.open();
    let tree = store
        .tree(&tree_name, &format!("client/{marker_hex}"))
        .unwrap();
    tree.put(record_id.as_bytes(), &marker).unwrap();
    tree.put(b"hex", marker_hex.as_bytes()).unwrap();
    let mut blob = store.create_blob(&record_id, "model/marker").unwrap();
    for _ in 0..100 {
        blob.write_all(&marker).unwrap();
    }
    blob.commit().unwrap();
    store.rotate_kek().unwrap();
    drop((tree, store));

    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let needles: Vec<Vec<u8>> = vec![
        marker.to_vec(),
        marker[..16].to_vec(),
        marker_hex.as_bytes().to_vec(),
        marker_hex.to_uppercase().into_bytes(),
        marker_hex.as_bytes()[..24].to_vec(),
        b64.encode(marker).into_bytes(),
        b64url.encode(marker).into_bytes(),
    ];
    let files = test_support::files_under(&fx.data_dir());
    for (path, bytes) in &files {
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "marker found in {}",
                path.display()
            );
        }
    }
    assert!(files.len() >= 3, "the scan saw the database and the blob");
});

both_backends!(shredding_a_key_destroys_only_its_records, |fx| {
    let store = fx.open();
    let alice = store.tree("results", "client/alice").unwrap();
    let bob = store.tree("results-bob", "client/bob").unwrap();
    alice.put(b"job-1", b"alice's result").unwrap();
    bob.put(b"job-1", b"bob's result").unwrap();
    let mut blob = store.create_blob("alice-upload", "client/alice").unwrap();
    blob.write_all(b"alice's blob").unwrap();
    blob.commit().unwrap();
    let generation = store.kek_generation();

    assert!(store.shred("client/alice").unwrap());
    assert!(
        store.kek_generation() > generation,
        "shredding rotates the KEK"
    );
    assert!(!store.shred("client/nobody").unwrap());
    drop((alice, bob, store));

    fx.reboot();

    let store = fx.open();
    let alice = store.tree("results", "client/alice").unwrap();
    let bob = store.tree("results-bob", "client/bob").unwrap();
    let err = alice.get(b"job-1").unwrap_err();
    assert!(matches!(err, Error::Shredded { .. }), "{err:?}");
    assert!(err.to_string().contains("crypto-shredded"));
    assert!(matches!(
        store.open_blob("alice-upload").err(),
        Some(Error::Shredded { .. })
    ));
    assert_eq!(
        bob.get(b"job-1").unwrap().unwrap().as_slice(),
        b"bob's result"
    );

    // The purpose gets a new key; new records are readable again.
    alice.put(b"job-2", b"new").unwrap();
    assert_eq!(alice.get(b"job-2").unwrap().unwrap().as_slice(), b"new");
});

both_backends!(kek_rotation_rewraps_without_touching_data, |fx| {
    let store = fx.open();
    let tree = store.tree("t", "metadata").unwrap();
    tree.put(b"k", b"v").unwrap();
    let before = store.kek_generation();
    store.rotate_kek().unwrap();
    store.rotate_kek().unwrap();
    assert_eq!(store.kek_generation(), before + 2);
    assert_eq!(tree.get(b"k").unwrap().unwrap().as_slice(), b"v");
    drop((tree, store));

    fx.reboot();
    let store = fx.open();
    assert_eq!(store.kek_generation(), before + 2);
    let tree = store.tree("t", "metadata").unwrap();
    assert_eq!(tree.get(b"k").unwrap().unwrap().as_slice(), b"v");
});

both_backends!(blobs_stream_and_detect_damage, |fx| {
    let store = fx.open();
    for len in [
        0,
        1,
        CHUNK_LEN - 1,
        CHUNK_LEN,
        CHUNK_LEN + 1,
        3 * CHUNK_LEN + 7,
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let mut w = store.create_blob("model", "model/digits").unwrap();
        // Odd write sizes cross chunk boundaries.
        for part in data.chunks(7919) {
            w.write_all(part).unwrap();
        }
        w.commit().unwrap();
        let mut back = Vec::new();
        store
            .open_blob("model")
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data, "length {len}");
    }

    let path = only_blob_file(&fx.data_dir());
    let good = std::fs::read(&path).unwrap();
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("flipped byte", {
            let mut b = good.clone();
            b[good.len() / 2] ^= 1;
            b
        }),
        (
            "truncated at a chunk boundary",
            good[..30 + CHUNK_LEN + 16].to_vec(),
        ),
        ("truncated mid-chunk", good[..good.len() - 5].to_vec()),
        ("bytes appended", [good.clone(), vec![0; 40]].concat()),
        ("header only", good[..30].to_vec()),
        ("format version relabelled", {
            // "APBLOB" then the version byte, which every chunk authenticates.
            let mut b = good.clone();
            b[6] = 1;
            b
        }),
    ];
    for (what, bytes) in damages {
        std::fs::write(&path, &bytes).unwrap();
        let mut out = Vec::new();
        let err = store
            .open_blob("model")
            .unwrap()
            .read_to_end(&mut out)
            .expect_err(what);
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{what}");
    }

    // A blob abandoned before commit leaves nothing behind.
    let mut w = store.create_blob("abandoned", "model/digits").unwrap();
    w.write_all(&[1; 1000]).unwrap();
    drop(w);
    assert!(matches!(
        store.open_blob("abandoned").err(),
        Some(Error::NoSuchBlob)
    ));
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
});

both_backends!(a_hundred_megabyte_blob_streams_through, |fx| {
    let store = fx.open();
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    let mut w = store.create_blob("big", "model/minilm").unwrap();
    for _ in 0..100 {
        w.write_all(&block).unwrap();
    }
    w.commit().unwrap();
    let mut r = store.open_blob("big").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..100 {
        r.read_exact(&mut buf).unwrap();
        assert!(buf == block);
    }
    assert_eq!(r.read(&mut buf).unwrap(), 0);
});

#[test]
fn a_store_refuses_the_wrong_backend() {
    let soft = Fixture::new(Kind::Soft);
    drop(soft.open());
    let tpm = Fixture::new(Kind::Tpm);
    let err = keystore::Store::open(&soft.data_dir(), tpm.backend()).unwrap_err();
    assert!(matches!(err, Error::BackendMismatch { .. }), "{err:?}");
}

#[test]
fn oversized_inputs_are_refused() {
    let fx = Fixture::new(Kind::Soft);
    let store = fx.open();
    let tree = store.tree("t", "p").unwrap();
    let err = tree
        .put(&vec![0; keystore::MAX_ID_LEN + 1], b"v")
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }));
    let err = tree
        .put(b"id", &vec![0; keystore::MAX_VALUE_LEN + 1])
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }));
}

/// Opens the database directly (the store must be closed) and runs `f` on
/// the one tree that holds records, i.e. not the key tree.
fn with_record_tree(data: &Path, f: impl FnOnce(&sled::Tree)) {
    let db = test_support::open_raw_database(data);
    let name = db
        .tree_names()
        .into_iter()
        .find(|n| n.len() == 32)
        .expect("a record tree");
    let tree = db.open_tree(name).unwrap();
    f(&tree);
    db.flush().unwrap();
}

/// Flips one byte of the first record; returns that record's key.
fn flip_record_byte(data: &Path, position: usize) -> Vec<u8> {
    let mut key = Vec::new();
    with_record_tree(data, |t| {
        let (k, v) = t.iter().next().unwrap().unwrap();
        let mut v = v.to_vec();
        v[position] ^= 0x01;
        t.insert(&k, v).unwrap();
        key = k.to_vec();
    });
    key
}

fn flip_record_byte_back(data: &Path, key: &[u8], position: usize) {
    with_record_tree(data, |t| {
        let mut v = t.get(key).unwrap().unwrap().to_vec();
        v[position] ^= 0x01;
        t.insert(key, v).unwrap();
    });
}

fn only_blob_file(data: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(data.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    files.pop().unwrap()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

#[test]
fn a_store_in_use_is_reported_as_such() {
    let fx = Fixture::new(Kind::Soft);
    let store = fx.open();
    let started = std::time::Instant::now();
    let err = fx.try_open().unwrap_err();
    assert!(matches!(err, Error::InUse { .. }), "{err:?}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    // It waited for the lock before giving up (a handle dropped a moment
    // ago releases it from a background thread).
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    drop(store);
    drop(fx.open());
}

both_backends!(a_factory_reset_makes_every_copy_unreadable, |fx| {
    let store = fx.open();
    store.tree("t", "p").unwrap().put(b"id", b"secret").unwrap();
    let identity = store.create_identity_key().unwrap();
    let key = store.open_identity_key(&identity).unwrap();
    key.sign(b"before").unwrap();
    drop(store);
    // What a disk image taken before the reset would hold.
    let image = fx.root().join("image");
    test_support::copy_dir(&fx.data_dir(), &image);

    let reset = keystore::factory_reset(&fx.data_dir(), fx.backend()).unwrap();
    assert!(reset.root_destroyed && reset.store_found, "{reset:?}");
    assert!(!fx.data_dir().join("db").exists());

    let err = keystore::Store::open(&image, fx.backend()).unwrap_err();
    assert!(matches!(err, Error::ForeignDevice), "{err:?}");
    if fx.kind == Kind::Tpm {
        let err = key.sign(b"after").unwrap_err();
        assert!(matches!(err, Error::ForeignDevice), "{err:?}");
    }
    // The next start is a new, empty store.
    let store = fx.open();
    assert_eq!(store.tree("t", "p").unwrap().get(b"id").unwrap(), None);
});
