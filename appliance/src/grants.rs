//! Grants (what each client may call), kept encrypted in the keystore, and
//! the per-client rate and daily-quota limits they set.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use keystore::Store;
use serde::{Deserialize, Serialize};

use crate::config::LimitsConfig;
use crate::error::AppError;

const TREE: &str = "grants";
const PURPOSE: &str = "metadata";

/// What one client may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// Client name (from its certificate's SPIFFE URI).
    pub client: String,
    /// Model names it may call; `*` for all.
    pub models: Vec<String>,
    /// Whether it may call the admin service and read metrics.
    pub admin: bool,
    /// Sustained requests per second (None: the server default).
    pub rate_per_second: Option<f64>,
    /// Burst (None: the server default).
    pub burst: Option<u32>,
    /// Requests per UTC day (None: unlimited).
    pub daily_quota: Option<u64>,
}

impl Grant {
    /// The admin role on every model, unlimited: the first administrator's
    /// grant, given at enrollment.
    pub fn admin(client: &str) -> Grant {
        Grant {
            client: client.to_owned(),
            models: vec!["*".into()],
            admin: true,
            rate_per_second: None,
            burst: None,
            daily_quota: None,
        }
    }

    /// Whether the grant covers `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }

    /// Checks a grant that came from the network.
    pub fn check(&self) -> Result<(), AppError> {
        let bad = |m: &str| Err(AppError::InvalidArgument(m.to_owned()));
        // The rules certificates and model lines follow: a grant for a
        // name no certificate can carry, or for a model that cannot exist,
        // is a mistake.
        if let Err(e) = ident::ClientName::new(&self.client) {
            return bad(&format!("grant.client: {e}"));
        }
        if self.models.len() > 1024 {
            return bad("grant.models: at most 1024 of them");
        }
        if let Some(Err(e)) = self
            .models
            .iter()
            .filter(|m| *m != "*")
            .map(|m| ident::ModelName::new(m))
            .find(Result::is_err)
        {
            return bad(&format!("grant.models: {e}"));
        }
        if let Some(r) = self.rate_per_second
            && !(r > 0.0 && r <= 1e6)
        {
            return bad("grant.rate_per_second: must be in (0, 1000000]");
        }
        if self.burst == Some(0) {
            return bad("grant.burst: must be at least 1");
        }
        Ok(())
    }
}

/// Which limit refused a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The token bucket is empty.
    Rate {
        /// Configured rate.
        per_second: f64,
    },
    /// The day's quota is used up.
    Quota {
        /// Configured quota.
        per_day: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Rate { per_second } => {
                write!(
                    f,
                    "rate limit of {per_second} requests per second exceeded; retry shortly"
                )
            }
            Refusal::Quota { per_day } => write!(
                f,
                "daily quota of {per_day} requests exhausted; it resets at 00:00 UTC"
            ),
        }
    }
}

struct Usage {
    tokens: f64,
    refilled: Instant,
    day: u64,
    used_today: u64,
}

/// All grants, cached in memory, written through to the keystore.
pub struct Grants {
    store: Store,
    defaults: LimitsConfig,
    grants: RwLock<HashMap<String, Grant>>,
    usage: Mutex<HashMap<String, Usage>>,
}

impl Grants {
    /// Loads every grant from the store (blocking).
    pub fn load(store: Store, defaults: LimitsConfig) -> Result<Grants, AppError> {
        let tree = store.tree(TREE, PURPOSE)?;
        let mut grants = HashMap::new();
        for record in tree.iter() {
            let (_, value) = record?;
            let grant: Grant = serde_json::from_slice(&value)
                .map_err(|e| AppError::Internal(format!("stored grant: {e}")))?;
            grants.insert(grant.client.clone(), grant);
        }
        Ok(Grants {
            store,
            defaults,
            grants: RwLock::new(grants),
            usage: Mutex::new(HashMap::new()),
        })
    }

    /// The grant of `client`, if any.
    pub fn get(&self, client: &str) -> Option<Grant> {
        self.read().get(client).cloned()
    }

    /// Every grant, sorted by client.
    pub fn list(&self) -> Vec<Grant> {
        let mut all: Vec<Grant> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.client.cmp(&b.client));
        all
    }

    /// Creates or replaces a grant, durably (blocking).
    pub fn put(&self, grant: Grant) -> Result<(), AppError> {
        grant.check()?;
        let bytes = serde_json::to_vec(&grant).map_err(|e| AppError::Internal(e.to_string()))?;
        self.store
            .tree(TREE, PURPOSE)?
            .put(grant.client.as_bytes(), &bytes)?;
        self.lock_usage().remove(&grant.client);
        self.grants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(grant.client.clone(), grant);
        Ok(())
    }

    /// Removes a grant, durably (blocking).
    pub fn delete(&self, client: &str) -> Result<bool, AppError> {
        let existed = self.store.tree(TREE, PURPOSE)?.remove(client.as_bytes())?;
        self.grants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(client);
        Ok(existed)
    }

    /// Takes one request from `grant`'s rate bucket and daily quota.
    pub fn admit(&self, grant: &Grant) -> Result<(), Refusal> {
        let rate = grant
            .rate_per_second
            .unwrap_or(self.defaults.default_rate_per_second);
        let burst = f64::from(grant.burst.unwrap_or(self.defaults.default_burst));
        let now = Instant::now();
        let today = utc_day();
        let mut usage = self.lock_usage();
        let u = usage.entry(grant.client.clone()).or_insert(Usage {
            tokens: burst,
            refilled: now,
            day: today,
            used_today: 0,
        });
        u.tokens = (u.tokens + now.duration_since(u.refilled).as_secs_f64() * rate).min(burst);
        u.refilled = now;
        if u.day != today {
            u.day = today;
            u.used_today = 0;
        }
        if let Some(per_day) = grant.daily_quota
            && u.used_today >= per_day
        {
            return Err(Refusal::Quota { per_day });
        }
        if u.tokens < 1.0 {
            return Err(Refusal::Rate { per_second: rate });
        }
        u.tokens -= 1.0;
        u.used_today += 1;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Grant>> {
        self.grants.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_usage(&self) -> std::sync::MutexGuard<'_, HashMap<String, Usage>> {
        self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn utc_day() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A stored grant that does not parse is an error, never a panic.
        #[test]
        fn stored_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = serde_json::from_slice::<Grant>(&bytes);
        }

        /// A grant is accepted exactly when its client and model names
        /// follow the names a certificate and a model line can carry.
        #[test]
        fn grants_follow_the_shared_name_rules(client in "\\PC{0,70}", model in "\\PC{0,70}") {
            let grant = Grant {
                client: client.clone(),
                models: vec![model.clone()],
                admin: false,
                rate_per_second: None,
                burst: None,
                daily_quota: None,
            };
            let names_ok = ident::ClientName::new(&client).is_ok()
                && (model == "*" || ident::ModelName::new(&model).is_ok());
            prop_assert_eq!(grant.check().is_ok(), names_ok);
            let stored = serde_json::to_vec(&grant).unwrap();
            prop_assert_eq!(serde_json::from_slice::<Grant>(&stored).unwrap(), grant);
        }
    }
}
