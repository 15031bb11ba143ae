//! Validation of names, entities and durations (V1–V5).
//!
//! Juju calls this the secretary. Every store validates through a [`Policy`] before any I/O,
//! so invalid input changes nothing. [`JujuPolicy`] is the default; [`PermissivePolicy`] accepts
//! any non-empty name (for example Kubernetes pod names as holders), which is why stores must
//! encode names into keys injectively.

use std::fmt;
use std::time::Duration;

use crate::{Error, Result};

/// The longest lease a [`JujuPolicy`] grants unless configured otherwise (V3).
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(3600);

/// The longest pin entity the default rules accept, in bytes (V4).
pub const MAX_ENTITY_BYTES: usize = 256;

/// Rules for names, entities and durations (V5).
///
/// Implementors decide what is valid; the provided methods combine the checks the way stores
/// need them. All methods are pure and cheap: stores call them on every operation.
pub trait Policy: Send + Sync + fmt::Debug {
    /// Checks an application name.
    ///
    /// # Errors
    /// [`Error::InvalidApplication`] naming the value and the rule it breaks.
    fn check_application(&self, application: &str) -> Result<()>;

    /// Checks a unit name and that the unit belongs to `application`.
    ///
    /// # Errors
    /// [`Error::InvalidUnit`] naming the value and the rule it breaks.
    fn check_unit(&self, application: &str, unit: &str) -> Result<()>;

    /// The application a unit belongs to (T1: a tracker derives it from its unit).
    ///
    /// # Errors
    /// [`Error::InvalidUnit`] if no application can be derived from `unit`.
    fn application_of(&self, unit: &str) -> Result<String>;

    /// Checks a lease duration.
    ///
    /// # Errors
    /// [`Error::InvalidDuration`] naming the value and the bound it breaks.
    fn check_duration(&self, duration: Duration) -> Result<()>;

    /// Checks a pin entity.
    ///
    /// # Errors
    /// [`Error::InvalidEntity`] naming the value and the rule it breaks.
    fn check_entity(&self, entity: &str) -> Result<()>;

    /// Checks the arguments of a claim.
    ///
    /// # Errors
    /// The first `Invalid*` error among application, unit and duration.
    fn check_claim(&self, application: &str, unit: &str, duration: Duration) -> Result<()> {
        self.check_application(application)?;
        self.check_unit(application, unit)?;
        self.check_duration(duration)
    }

    /// Checks an application and one of its units (checks and revokes).
    ///
    /// # Errors
    /// The first `Invalid*` error among application and unit.
    fn check_member(&self, application: &str, unit: &str) -> Result<()> {
        self.check_application(application)?;
        self.check_unit(application, unit)
    }

    /// Checks an application and a pin entity.
    ///
    /// # Errors
    /// The first `Invalid*` error among application and entity.
    fn check_pin(&self, application: &str, entity: &str) -> Result<()> {
        self.check_application(application)?;
        self.check_entity(entity)
    }
}

/// Juju's rules (V1–V4), the default policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JujuPolicy {
    max_duration: Duration,
}

impl Default for JujuPolicy {
    fn default() -> Self {
        JujuPolicy {
            max_duration: DEFAULT_MAX_DURATION,
        }
    }
}

impl JujuPolicy {
    /// Juju's rules with another maximum lease duration.
    pub fn with_max_duration(max_duration: Duration) -> Self {
        JujuPolicy { max_duration }
    }

    /// The longest lease this policy accepts.
    pub fn max_duration(&self) -> Duration {
        self.max_duration
    }
}

/// V1: `^[a-z][a-z0-9]*(-[a-z0-9]*[a-z][a-z0-9]*)*$`.
fn is_juju_application(name: &str) -> bool {
    let mut segments = name.split('-');
    let Some(first) = segments.next() else {
        return false;
    };
    let first_ok = first.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && first
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    first_ok
        && segments.all(|segment| {
            segment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && segment.bytes().any(|b| b.is_ascii_lowercase())
        })
}

/// V2: the application part of a juju unit name `<application>/<number>`, borrowed (checks
/// and claims validate on every call, so this does not allocate).
fn juju_unit_application(unit: &str) -> Result<&str> {
    let Some((application, number)) = unit.split_once('/') else {
        return Err(invalid_unit(
            unit,
            "a unit name is <application>/<number> (V2)",
        ));
    };
    if !is_juju_application(application) {
        return Err(invalid_unit(
            unit,
            "the part before '/' is not a valid application name (V2)",
        ));
    }
    if !is_unit_number(number) {
        return Err(invalid_unit(
            unit,
            "the unit number is 0 or a decimal without leading zeros (V2)",
        ));
    }
    Ok(application)
}

/// V2's unit number: `0|[1-9][0-9]*`.
fn is_unit_number(number: &str) -> bool {
    match number.as_bytes() {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        digits => digits.iter().all(u8::is_ascii_digit),
    }
}

fn invalid_unit(unit: &str, reason: impl Into<String>) -> Error {
    Error::InvalidUnit {
        name: unit.to_owned(),
        reason: reason.into(),
    }
}

fn check_duration_bounds(duration: Duration, max: Duration) -> Result<()> {
    if duration.is_zero() {
        return Err(Error::InvalidDuration {
            duration,
            reason: "a lease duration must be greater than zero (V3)".into(),
        });
    }
    if duration > max {
        return Err(Error::InvalidDuration {
            duration,
            reason: format!("a lease duration must be at most {max:?} (V3)"),
        });
    }
    Ok(())
}

/// V4: non-empty, at most 256 bytes, no whitespace or control characters.
fn check_default_entity(entity: &str) -> Result<()> {
    let reason = if entity.is_empty() {
        "a pin entity must not be empty (V4)".to_owned()
    } else if entity.len() > MAX_ENTITY_BYTES {
        format!(
            "a pin entity must be at most {MAX_ENTITY_BYTES} bytes, this one has {} (V4)",
            entity.len()
        )
    } else if entity.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "a pin entity must not contain whitespace or control characters (V4)".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::InvalidEntity {
        entity: entity.to_owned(),
        reason,
    })
}

impl Policy for JujuPolicy {
    fn check_application(&self, application: &str) -> Result<()> {
        if is_juju_application(application) {
            return Ok(());
        }
        Err(Error::InvalidApplication {
            name: application.to_owned(),
            reason: "an application name is lowercase letters and digits in dash-separated \
                     words, starting with a letter, each word holding a letter (V1)"
                .into(),
        })
    }

    fn check_unit(&self, application: &str, unit: &str) -> Result<()> {
        let owner = juju_unit_application(unit)?;
        if owner != application {
            return Err(invalid_unit(
                unit,
                format!("the unit belongs to {owner:?}, not to {application:?} (V2)"),
            ));
        }
        Ok(())
    }

    fn application_of(&self, unit: &str) -> Result<String> {
        juju_unit_application(unit).map(str::to_owned)
    }

    fn check_duration(&self, duration: Duration) -> Result<()> {
        check_duration_bounds(duration, self.max_duration)
    }

    fn check_entity(&self, entity: &str) -> Result<()> {
        check_default_entity(entity)
    }
}

/// A policy for holders that are not juju units (V5): any non-empty name up to a length
/// bound, any unit for any application. Durations and entities follow the default rules.
///
/// Names may contain `:`, `{`, `}`, `/`, `*`, `%`, unicode and so on; every store encodes
/// them injectively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissivePolicy {
    max_name_bytes: usize,
    max_duration: Duration,
}

impl Default for PermissivePolicy {
    fn default() -> Self {
        PermissivePolicy {
            max_name_bytes: 64 * 1024,
            max_duration: DEFAULT_MAX_DURATION,
        }
    }
}

impl PermissivePolicy {
    /// A permissive policy with another bound on name length.
    pub fn with_max_name_bytes(max_name_bytes: usize) -> Self {
        PermissivePolicy {
            max_name_bytes,
            ..Self::default()
        }
    }

    fn name_problem(&self, name: &str) -> Option<String> {
        if name.is_empty() {
            Some("a name must not be empty".into())
        } else if name.len() > self.max_name_bytes {
            Some(format!(
                "a name must be at most {} bytes, this one has {}",
                self.max_name_bytes,
                name.len()
            ))
        } else {
            None
        }
    }
}

impl Policy for PermissivePolicy {
    fn check_application(&self, application: &str) -> Result<()> {
        match self.name_problem(application) {
            None => Ok(()),
            Some(reason) => Err(Error::InvalidApplication {
                name: application.to_owned(),
                reason: format!("{reason} (V5)"),
            }),
        }
    }

    fn check_unit(&self, _application: &str, unit: &str) -> Result<()> {
        match self.name_problem(unit) {
            None => Ok(()),
            Some(reason) => Err(invalid_unit(unit, format!("{reason} (V5)"))),
        }
    }

    fn application_of(&self, unit: &str) -> Result<String> {
        match unit.rsplit_once('/') {
            Some((application, _)) if !application.is_empty() => Ok(application.to_owned()),
            _ => Err(invalid_unit(
                unit,
                "no application can be derived: expected <application>/<id> (V5)",
            )),
        }
    }

    fn check_duration(&self, duration: Duration) -> Result<()> {
        check_duration_bounds(duration, self.max_duration)
    }

    fn check_entity(&self, entity: &str) -> Result<()> {
        check_default_entity(entity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn juju() -> JujuPolicy {
        JujuPolicy::default()
    }

    #[test]
    fn v1_juju_application_examples() {
        for valid in [
            "wordpress",
            "but-this-works",
            "foo42",
            "a",
            "a-b2c",
            "x1-2y",
        ] {
            assert!(juju().check_application(valid).is_ok(), "{valid}");
        }
        for invalid in [
            "foo-2",
            "is-it-",
            "42also-not",
            "Foo",
            "",
            "-a",
            "a--b",
            "a_b",
            "é",
        ] {
            let err = juju().check_application(invalid).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidApplication { name, .. } if name == invalid),
                "{invalid}: {err}"
            );
            assert!(err.to_string().contains("V1"), "{err}");
        }
    }

    #[test]
    fn v2_juju_unit_examples() {
        assert!(
            juju()
                .check_unit("rabbitmq-server", "rabbitmq-server/123")
                .is_ok()
        );
        assert!(juju().check_unit("wordpress", "wordpress/0").is_ok());
        for invalid in [
            "foo/", "foo/01", "x/-1", "foo", "", "/1", "Foo/1", "foo/1/2", "foo/1a",
        ] {
            let app = invalid.split('/').next().unwrap_or_default();
            let err = juju().check_unit(app, invalid).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidUnit { name, .. } if name == invalid),
                "{invalid}: {err}"
            );
        }
        let err = juju().check_unit("mysql", "wordpress/0").unwrap_err();
        assert!(
            err.to_string().contains("belongs to \"wordpress\""),
            "{err}"
        );
    }

    #[test]
    fn v2_application_of() {
        assert_eq!(
            juju().application_of("mysql/3").ok().as_deref(),
            Some("mysql")
        );
        assert!(juju().application_of("mysql").is_err());
    }

    #[test]
    fn v3_durations() {
        assert!(juju().check_duration(Duration::from_nanos(1)).is_ok());
        assert!(juju().check_duration(DEFAULT_MAX_DURATION).is_ok());
        for invalid in [
            Duration::ZERO,
            DEFAULT_MAX_DURATION + Duration::from_nanos(1),
            Duration::MAX,
        ] {
            let err = juju().check_duration(invalid).unwrap_err();
            assert!(
                matches!(err, Error::InvalidDuration { duration, .. } if duration == invalid),
                "{invalid:?}"
            );
        }
        let short = JujuPolicy::with_max_duration(Duration::from_secs(5));
        assert!(short.check_duration(Duration::from_secs(6)).is_err());
    }

    #[test]
    fn v4_entities() {
        assert!(juju().check_entity("machine-0").is_ok());
        assert!(juju().check_entity(&"e".repeat(MAX_ENTITY_BYTES)).is_ok());
        for invalid in [
            String::new(),
            "e".repeat(MAX_ENTITY_BYTES + 1),
            "a b".into(),
            "a\tb".into(),
            "a\u{7}".into(),
        ] {
            assert!(
                matches!(
                    juju().check_entity(&invalid),
                    Err(Error::InvalidEntity { .. })
                ),
                "{invalid:?}"
            );
        }
    }

    #[test]
    fn v5_permissive_accepts_what_juju_refuses() {
        let permissive = PermissivePolicy::default();
        for name in ["a:b", "{tag}", "Pod-Name_7", "ü/∑", "%*"] {
            assert!(permissive.check_application(name).is_ok(), "{name}");
            assert!(permissive.check_unit("other", name).is_ok(), "{name}");
        }
        assert!(permissive.check_application("").is_err());
        assert!(permissive.check_application(&"x".repeat(64 * 1024)).is_ok());
        assert!(
            permissive
                .check_application(&"x".repeat(64 * 1024 + 1))
                .is_err()
        );
        assert_eq!(
            permissive.application_of("web-7f9c/pod-1").ok().as_deref(),
            Some("web-7f9c")
        );
    }
}
