//! Where a repository's files come from: a directory (USB media, a file
//! share, a repository on the vendor's disk), a LAN mirror over HTTP, or
//! (in the appliance) a repository an operator pushes over the admin API.
//!
//! A source only moves bytes; nothing it returns is trusted until the
//! verifier has checked it. Every file name is flat (no `/`), and sources
//! read at most the bound they are given.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// A repository's files, by name within `metadata/` or `targets/`.
pub trait RepositorySource: Send + Sync {
    /// Where the files come from, for messages.
    fn describe(&self) -> String;

    /// The bytes of `metadata/<name>`, or `None` if the repository has no
    /// such file. More than `max` bytes is an error.
    fn metadata(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>>;

    /// A reader of `targets/<name>`. The caller bounds and checks it.
    fn target(&self, name: &str) -> Result<Box<dyn Read + Send>>;
}

/// Whether `name` is a flat file name a repository may hold: no path
/// separators, no leading dot, printable ASCII, at most 255 bytes.
pub fn is_flat_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

fn check_name(name: &str) -> Result<()> {
    if is_flat_name(name) {
        Ok(())
    } else {
        Err(Error::Source(format!(
            "refusing repository file name {:?}: only flat names are read",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// Reads at most `max` bytes; more is an error naming `what`.
pub fn read_bounded(mut reader: impl Read, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    (&mut reader)
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Stream {
            what: what.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(Error::Untrusted(format!(
            "{what} is larger than its bound of {max} bytes"
        )));
    }
    Ok(bytes)
}

/// A repository in a local directory (`metadata/`, `targets/`).
#[derive(Debug, Clone)]
pub struct DirSource {
    dir: PathBuf,
}

impl DirSource {
    /// The repository under `dir`.
    pub fn new(dir: &Path) -> DirSource {
        DirSource { dir: dir.into() }
    }
}

impl RepositorySource for DirSource {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn metadata(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>> {
        check_name(name)?;
        let path = self.dir.join("metadata").join(name);
        match std::fs::File::open(&path) {
            Ok(f) => read_bounded(f, max, &format!("metadata/{name}")).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn target(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        check_name(name)?;
        let path = self.dir.join("targets").join(name);
        let file = std::fs::File::open(&path).map_err(|e| Error::io(path, e))?;
        Ok(Box::new(file))
    }
}

/// A repository on an HTTP mirror: `<base>/metadata/<name>`,
/// `<base>/targets/<name>`. Plain HTTP: TUF's signatures carry the trust,
/// not the transport.
#[derive(Debug, Clone)]
pub struct HttpSource {
    metadata: String,
    targets: String,
    agent: ureq::Agent,
}

/// How long to wait for a mirror to accept a connection and to answer.
const HTTP_CONNECT: Duration = Duration::from_secs(10);
const HTTP_RESPONSE: Duration = Duration::from_secs(30);
/// Longest a single file's body may take (a large image on a slow LAN).
const HTTP_BODY: Duration = Duration::from_secs(30 * 60);

impl HttpSource {
    /// A mirror at `base` (`http://host[:port][/path]`), serving
    /// `metadata/` and `targets/` below it.
    pub fn new(base: &str) -> Result<HttpSource> {
        let base = check_url(base)?;
        HttpSource::with_bases(&format!("{base}/metadata"), &format!("{base}/targets"))
    }

    /// Metadata and targets under separate base URLs.
    pub fn with_bases(metadata: &str, targets: &str) -> Result<HttpSource> {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(HTTP_CONNECT))
            .timeout_recv_response(Some(HTTP_RESPONSE))
            .timeout_recv_body(Some(HTTP_BODY))
            .http_status_as_error(false)
            .max_redirects(0)
            .build();
        Ok(HttpSource {
            metadata: check_url(metadata)?,
            targets: check_url(targets)?,
            agent: config.into(),
        })
    }

    fn get(&self, base: &str, name: &str) -> Result<Option<ureq::http::Response<ureq::Body>>> {
        let url = format!("{base}/{name}");
        let response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| Error::Source(format!("mirror {url}: {e}")))?;
        match response.status().as_u16() {
            200 => Ok(Some(response)),
            404 | 403 => Ok(None),
            code => Err(Error::Source(format!("mirror {url}: HTTP status {code}"))),
        }
    }
}

/// An `http://` base URL without query, fragment or user, without its
/// trailing slash.
fn check_url(base: &str) -> Result<String> {
    let url =
        url::Url::parse(base).map_err(|e| Error::Source(format!("mirror URL {base:?}: {e}")))?;
    if url.scheme() != "http" {
        return Err(Error::Source(format!(
            "mirror URL {base:?}: only http:// mirrors are supported (the metadata is signed; \
                 the transport carries no trust)"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(Error::Source(format!(
            "mirror URL {base:?}: no query, fragment or user name allowed"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

impl RepositorySource for HttpSource {
    fn describe(&self) -> String {
        format!("mirror {}", self.metadata.trim_end_matches("/metadata"))
    }

    fn metadata(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>> {
        check_name(name)?;
        match self.get(&self.metadata, name)? {
            Some(response) => read_bounded(
                response.into_body().into_reader(),
                max,
                &format!("metadata/{name}"),
            )
            .map(Some),
            None => Ok(None),
        }
    }

    fn target(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        check_name(name)?;
        match self.get(&self.targets, name)? {
            Some(response) => Ok(Box::new(response.into_body().into_reader())),
            None => Err(Error::Source(format!(
                "{}: no target {name}",
                self.describe()
            ))),
        }
    }
}
