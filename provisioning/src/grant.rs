//! Access grants as the operator writes them: `--rate 50/s`, `--quota
//! 100000/day`, `--models digits,minilm`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::names::{ClientName, ModelName};

/// Highest sustained rate a grant may ask for. Far above what one appliance
/// serves; it only keeps typos like `5e9/s` off the wire.
pub const MAX_RATE_PER_SECOND: f64 = 1_000_000.0;

/// A sustained request rate, in requests per second (> 0).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Rate(f64);

impl Rate {
    /// Requests per second.
    pub fn per_second(self) -> f64 {
        self.0
    }
}

impl FromStr for Rate {
    type Err = Error;
    /// `<number>/s`, `<number>/min` or `<number>/h`; the number may be
    /// fractional (`0.5/s`).
    fn from_str(s: &str) -> Result<Self> {
        let expected = "a rate such as 50/s, 0.5/s, 120/min or 600/h";
        let bad = || Error::invalid("rate", s, expected);
        let (number, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let divisor = match unit {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(bad()),
        };
        let value = parse_decimal(number).ok_or_else(bad)?;
        let per_second = value / divisor;
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(Error::invalid("rate", s, "must be greater than zero"));
        }
        if per_second > MAX_RATE_PER_SECOND {
            return Err(Error::invalid(
                "rate",
                s,
                format!("at most {MAX_RATE_PER_SECOND}/s"),
            ));
        }
        Ok(Rate(per_second))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.0)
    }
}

/// A plain decimal: digits with at most one dot, at most 20 characters
/// (no sign, exponent, `inf` or `NaN`, all of which `f64::from_str` takes).
fn parse_decimal(s: &str) -> Option<f64> {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let dots = s.bytes().filter(|b| *b == b'.').count();
    if s.len() > 20 || digits == 0 || dots > 1 || digits + dots != s.len() {
        return None;
    }
    s.parse().ok()
}

/// A daily request quota.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Quota {
    /// No daily limit (0 on the wire).
    Unlimited,
    /// At most this many requests per UTC day (≥ 1).
    PerDay(u64),
}

impl Quota {
    /// The wire value: requests per day, 0 for unlimited.
    pub fn wire(self) -> u64 {
        match self {
            Quota::Unlimited => 0,
            Quota::PerDay(n) => n,
        }
    }

    /// From the wire value.
    pub fn from_wire(n: u64) -> Self {
        if n == 0 {
            Quota::Unlimited
        } else {
            Quota::PerDay(n)
        }
    }
}

impl FromStr for Quota {
    type Err = Error;
    /// `<integer>/day` (≥ 1) or `unlimited`.
    fn from_str(s: &str) -> Result<Self> {
        let s_trim = s.trim();
        if s_trim == "unlimited" {
            return Ok(Quota::Unlimited);
        }
        let bad = || Error::invalid("quota", s, "a quota such as 100000/day, or unlimited");
        let number = s_trim
            .strip_suffix("/day")
            .or_else(|| s_trim.strip_suffix("/d"))
            .ok_or_else(bad)?;
        if number.is_empty() || number.len() > 20 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        match number.parse::<u64>() {
            Ok(0) => Err(Error::invalid(
                "quota",
                s,
                "must be at least 1/day (use `unlimited` for no limit)",
            )),
            Ok(n) => Ok(Quota::PerDay(n)),
            Err(_) => Err(bad()),
        }
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quota::Unlimited => f.write_str("unlimited"),
            Quota::PerDay(n) => write!(f, "{n}/day"),
        }
    }
}

/// The models a grant covers: model names, or `*` for all.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ModelList(Vec<String>);

impl ModelList {
    /// The entries as sent on the wire.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl FromStr for ModelList {
    type Err = Error;
    /// A comma-separated list of model names, or `*`.
    fn from_str(s: &str) -> Result<Self> {
        let mut out: Vec<String> = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let entry = if part == "*" {
                part.to_owned()
            } else {
                ModelName::new(part)?.as_str().to_owned()
            };
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
        Ok(ModelList(out))
    }
}

/// A grant to put on the appliance.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub struct GrantSpec {
    /// Who.
    pub client: ClientName,
    /// Which models it may call.
    pub models: ModelList,
    /// Whether it may call the admin service.
    pub admin: bool,
    /// Sustained rate.
    pub rate: Rate,
    /// Burst size; `None` leaves it to the appliance's default.
    pub burst: Option<u32>,
    /// Daily quota.
    pub quota: Quota,
}

impl GrantSpec {
    /// A grant from its parts. A burst of 0 is refused (leave it out for the
    /// appliance's default).
    pub fn new(
        client: ClientName,
        models: ModelList,
        admin: bool,
        rate: Rate,
        burst: Option<u32>,
        quota: Quota,
    ) -> Result<Self> {
        if burst == Some(0) {
            return Err(Error::invalid(
                "--burst",
                "0",
                "at least 1 (leave --burst out for the appliance's default)",
            ));
        }
        Ok(Self {
            client,
            models,
            admin,
            rate,
            burst,
            quota,
        })
    }

    /// The wire message.
    pub fn to_wire(&self) -> wire::admin::Grant {
        wire::admin::Grant {
            client: self.client.to_string(),
            models: self.models.as_slice().to_vec(),
            admin: self.admin,
            rate_per_second: self.rate.per_second(),
            burst: self.burst.unwrap_or(0),
            daily_quota: self.quota.wire(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn rates() {
        assert_eq!("50/s".parse::<Rate>().unwrap().per_second(), 50.0);
        assert_eq!("0.5/s".parse::<Rate>().unwrap().per_second(), 0.5);
        assert_eq!("120/min".parse::<Rate>().unwrap().per_second(), 2.0);
        assert_eq!("3600/h".parse::<Rate>().unwrap().per_second(), 1.0);
        for bad in [
            "",
            "50",
            "/s",
            "50/",
            "50/day",
            "0/s",
            "-1/s",
            "inf/s",
            "NaN/s",
            "1e3/s",
            "1.2.3/s",
            "2000000/s",
            " 5 /s",
        ] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(
                err.is_usage() && err.to_string().contains("rate"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn quotas() {
        assert_eq!(
            "100000/day".parse::<Quota>().unwrap(),
            Quota::PerDay(100_000)
        );
        assert_eq!("unlimited".parse::<Quota>().unwrap(), Quota::Unlimited);
        assert_eq!(Quota::Unlimited.wire(), 0);
        assert_eq!(Quota::from_wire(0), Quota::Unlimited);
        for bad in [
            "",
            "0/day",
            "100000",
            "-5/day",
            "1.5/day",
            "99999999999999999999/day",
            "5/week",
        ] {
            assert!(bad.parse::<Quota>().is_err(), "{bad}");
        }
    }

    #[test]
    fn model_lists() {
        let m: ModelList = "digits, minilm,digits".parse().unwrap();
        assert_eq!(m.as_slice(), ["digits", "minilm"]);
        assert_eq!("*".parse::<ModelList>().unwrap().as_slice(), ["*"]);
        assert!("digits,,minilm".parse::<ModelList>().is_err());
        assert!("a b".parse::<ModelList>().is_err());
    }

    #[test]
    fn grant_to_wire() {
        let g = GrantSpec::new(
            ClientName::new("billing").unwrap(),
            "digits".parse().unwrap(),
            false,
            "0.5/s".parse().unwrap(),
            None,
            "10/day".parse().unwrap(),
        )
        .unwrap();
        let w = g.to_wire();
        assert_eq!(w.client, "billing");
        assert_eq!(w.rate_per_second, 0.5);
        assert_eq!(w.burst, 0);
        assert_eq!(w.daily_quota, 10);
        assert!(
            GrantSpec::new(
                g.client.clone(),
                g.models.clone(),
                false,
                g.rate,
                Some(0),
                g.quota
            )
            .is_err()
        );
    }
}
