//! Data written in on-disk format 1 still reads, and what is rewritten
//! becomes format 2.
//!
//! `fixtures/v1/` is a store written by format 1 (ring's AES-GCM and the
//! hand-written STREAM, as in the parent of the commit adding it) with the
//! insecure software backend and a fixed root key, made by
//! `generate_v1_fixture` below. It is kept as a dump of the sled trees
//! (`db.txt`, one `tree key value` line of hex per entry, `-` for an empty
//! value) plus the blob files as they were on disk, so it stays a few files
//! and does not depend on sled's own file layout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use keystore::{CHUNK_LEN, Error, InsecureSoftwareBackend, Store};

/// Every record of the fixture: (tree, purpose, id, value).
const RECORDS: &[(&str, &str, &[u8], &[u8])] = &[
    ("grants", "metadata", b"client/alice", b"models=digits"),
    ("grants", "metadata", b"client/bob", b"models=minilm"),
    ("results", "client/alice", b"job-1", b"alice's result"),
];
/// A record whose data key was shredded before the fixture was saved.
const SHREDDED: (&str, &str, &[u8]) = ("results-bob", "client/bob", b"job-1");
/// KEK generation of the fixture: created (1), rotated by the shred (2).
const GENERATION: u32 = 2;

/// The fixture's blobs: (name, purpose, plaintext). The model spans two
/// chunks, so a non-final chunk's nonce is covered too.
fn blobs() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("model", "model/digits", pattern(CHUNK_LEN + 1000)),
        ("empty", "model/digits", Vec::new()),
    ]
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

#[test]
fn format_1_still_reads() {
    let tmp = fixture_copy();
    let store = open(tmp.path());
    assert_eq!(store.kek_generation(), GENERATION);
    check_contents(&store);
}

#[test]
fn rewrites_are_format_2_and_the_rest_stays_readable() {
    let tmp = fixture_copy();
    let store = open(tmp.path());
    let grants = store.tree("grants", "metadata").unwrap();
    grants
        .put(b"client/alice", b"models=digits,minilm")
        .unwrap();
    let mut w = store.create_blob("model", "model/digits").unwrap();
    w.write_all(b"model, release 2").unwrap();
    w.commit().unwrap();
    // Re-wraps every data key under a new KEK.
    store.rotate_kek().unwrap();
    drop((grants, store));

    let db = test_support::open_raw_database(&data_dir(tmp.path()));
    let mut record_formats = Vec::new();
    for name in db.tree_names().into_iter().filter(|n| n.len() == 32) {
        for entry in db.open_tree(name).unwrap().iter() {
            record_formats.push(entry.unwrap().1[0]);
        }
    }
    record_formats.sort();
    assert_eq!(
        record_formats,
        [1, 1, 1, 2],
        "three untouched, one rewritten"
    );
    let keys = db.open_tree("keys").unwrap();
    for entry in keys.iter() {
        let (k, v) = entry.unwrap();
        match k[0] {
            b'M' | b'K' => assert_eq!(v[0], 2, "wrapped keys are rewritten as format 2"),
            b'S' => assert_eq!(v[0], 1, "the sealed KEK's envelope is unchanged"),
            _ => {}
        }
    }
    drop((keys, db));
    let mut blob_formats: Vec<u8> = std::fs::read_dir(data_dir(tmp.path()).join("blobs"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap()[6])
        .collect();
    blob_formats.sort();
    assert_eq!(
        blob_formats,
        [1, 2],
        "the empty blob untouched, the model rewritten"
    );

    let store = open(tmp.path());
    let grants = store.tree("grants", "metadata").unwrap();
    assert_eq!(
        grants.get(b"client/alice").unwrap().unwrap().as_slice(),
        b"models=digits,minilm"
    );
    assert_eq!(
        grants.get(b"client/bob").unwrap().unwrap().as_slice(),
        b"models=minilm"
    );
    let results = store.tree("results", "client/alice").unwrap();
    assert_eq!(
        results.get(b"job-1").unwrap().unwrap().as_slice(),
        b"alice's result"
    );
    assert_eq!(read_blob(&store, "model"), b"model, release 2");
    assert!(read_blob(&store, "empty").is_empty());
}

/// The version byte is authenticated: a format 1 object relabelled as
/// format 2 does not open.
#[test]
fn a_relabelled_format_1_object_fails() {
    let tmp = fixture_copy();
    let db = test_support::open_raw_database(&data_dir(tmp.path()));
    for name in db.tree_names().into_iter().filter(|n| n.len() == 32) {
        let tree = db.open_tree(name).unwrap();
        for entry in tree.iter() {
            let (k, v) = entry.unwrap();
            let mut v = v.to_vec();
            v[0] = 2;
            tree.insert(k, v).unwrap();
        }
    }
    db.flush().unwrap();
    drop(db);
    for entry in std::fs::read_dir(data_dir(tmp.path()).join("blobs")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[6] = 2;
        std::fs::write(&path, bytes).unwrap();
    }

    let store = open(tmp.path());
    for (tree, purpose, id, _) in RECORDS {
        let err = store.tree(tree, purpose).unwrap().get(id).unwrap_err();
        assert!(matches!(err, Error::Tampered { .. }), "{err:?}");
    }
    for (name, _, _) in blobs() {
        let err = store
            .open_blob(name)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{name}");
    }
    drop(store);

    // The same for the metadata key, which every open unwraps.
    let db = test_support::open_raw_database(&data_dir(tmp.path()));
    let keys = db.open_tree("keys").unwrap();
    let mut meta = keys.get("M").unwrap().unwrap().to_vec();
    meta[0] = 2;
    keys.insert("M", meta).unwrap();
    db.flush().unwrap();
    drop((keys, db));
    let backend = InsecureSoftwareBackend::open(&tmp.path().join("root.key")).unwrap();
    let err = Store::open(&data_dir(tmp.path()), Box::new(backend)).unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err:?}");
}

/// Guards against a fixture remade by newer code: every record, wrapped
/// key and blob in it carries version byte 1.
#[test]
fn the_fixture_is_format_1() {
    let dump = std::fs::read_to_string(fixture_dir().join("db.txt")).unwrap();
    let keys_tree = hex::encode("keys");
    let mut versioned = 0;
    for line in dump.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (tree, key, value) = (fields[0], fields[1], fields[2]);
        // In the key tree: the sealed KEK (S), the metadata key (M) and the
        // data keys (K...) are versioned; index entries (P, X) are not.
        let is_versioned =
            tree != keys_tree || ["53", "4d", "4b"].iter().any(|p| key.starts_with(p));
        if is_versioned {
            assert!(value.starts_with("01"), "{line}");
            versioned += 1;
        }
    }
    assert!(versioned >= 7, "{versioned}");
    for entry in std::fs::read_dir(fixture_dir().join("blobs")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert_eq!(&bytes[..7], b"APBLOB\x01");
    }
}

/// Checks every record and blob of the fixture, by its known plaintext.
fn check_contents(store: &Store) {
    for (tree, purpose, id, value) in RECORDS {
        let got = store.tree(tree, purpose).unwrap().get(id).unwrap();
        assert_eq!(got.as_deref().map(Vec::as_slice), Some(*value), "{tree}");
    }
    let (tree, purpose, id) = SHREDDED;
    let err = store.tree(tree, purpose).unwrap().get(id).unwrap_err();
    assert!(matches!(err, Error::Shredded { .. }), "{err:?}");
    for (name, _, plain) in blobs() {
        assert!(read_blob(store, name) == plain, "blob {name}");
    }
}

fn read_blob(store: &Store, name: &str) -> Vec<u8> {
    let mut back = Vec::new();
    store
        .open_blob(name)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    back
}

/// A copy of the fixture as a live data directory plus its root key (the
/// fixture itself is never written to).
fn fixture_copy() -> tempfile::TempDir {
    let src = fixture_dir();
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    std::fs::create_dir_all(data.join("blobs")).unwrap();
    std::fs::copy(src.join("root.key"), tmp.path().join("root.key")).unwrap();
    for entry in std::fs::read_dir(src.join("blobs")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, data.join("blobs").join(path.file_name().unwrap())).unwrap();
    }
    let db = test_support::open_raw_database(&data);
    let dump = std::fs::read_to_string(src.join("db.txt")).unwrap();
    for line in dump.lines() {
        let fields: Vec<Vec<u8>> = line
            .split(' ')
            .map(|f| hex::decode(f.trim_start_matches('-')).unwrap())
            .collect();
        let [tree, key, value] = fields.as_slice() else {
            panic!("bad fixture line {line}");
        };
        db.open_tree(tree).unwrap().insert(key, &value[..]).unwrap();
    }
    db.flush().unwrap();
    tmp
}

fn data_dir(copy: &Path) -> PathBuf {
    copy.join("data")
}

/// Opens the store of a fixture copy with its root key.
fn open(copy: &Path) -> Store {
    let backend = InsecureSoftwareBackend::open(&copy.join("root.key")).unwrap();
    Store::open(&data_dir(copy), Box::new(backend)).unwrap()
}

/// How the fixture was made: run once, with the format 1 code, by
/// `cargo test -p keystore --test format_v1 -- --ignored generate_v1_fixture`.
/// Run today it would write the current format, so it is not re-run.
#[test]
#[ignore = "writes tests/fixtures/v1; run only to remake the fixture with format 1 code"]
fn generate_v1_fixture() {
    let out = fixture_dir();
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("blobs")).unwrap();
    // A fixed, published test key: this fixture protects nothing.
    let root_key: Vec<u8> = (0u8..32).collect();
    std::fs::write(out.join("root.key"), &root_key).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let backend = InsecureSoftwareBackend::open(&out.join("root.key")).unwrap();
    let store = Store::open(&data, Box::new(backend)).unwrap();
    for (tree, purpose, id, value) in RECORDS {
        store.tree(tree, purpose).unwrap().put(id, value).unwrap();
    }
    let (tree, purpose, id) = SHREDDED;
    store
        .tree(tree, purpose)
        .unwrap()
        .put(id, b"bob's result")
        .unwrap();
    for (name, purpose, plain) in blobs() {
        let mut w = store.create_blob(name, purpose).unwrap();
        w.write_all(&plain).unwrap();
        w.commit().unwrap();
    }
    assert!(store.shred(purpose).unwrap());
    assert_eq!(store.kek_generation(), GENERATION);
    check_contents(&store);
    drop(store);

    let db = test_support::open_raw_database(&data);
    let mut lines = Vec::new();
    for tree_name in db.tree_names() {
        for entry in db.open_tree(&tree_name).unwrap().iter() {
            let (k, v) = entry.unwrap();
            let value = if v.is_empty() {
                "-".to_owned()
            } else {
                hex::encode(v)
            };
            lines.push(format!(
                "{} {} {value}",
                hex::encode(&tree_name),
                hex::encode(k)
            ));
        }
    }
    lines.sort();
    std::fs::write(out.join("db.txt"), lines.join("\n") + "\n").unwrap();
    for entry in std::fs::read_dir(data.join("blobs")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, out.join("blobs").join(path.file_name().unwrap())).unwrap();
    }
}
