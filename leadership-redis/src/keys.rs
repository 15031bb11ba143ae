//! Key layout of one namespace (V5, N1).
//!
//! Every key of a namespace starts with `leadership:{n<ns>}:`, so all of them share one hash
//! tag (one cluster slot, so scripts may touch them together). The namespace is
//! percent-encoded (`%`, `{`, `}`) so it cannot end the tag early, and the leading `n` keeps
//! the tag non-empty. Names are hash fields or set members (binary-safe), or the suffix after
//! a fixed prefix (pin sets: `pins:<app>`), or, where two names meet, length-prefixed (lease
//! keys: `lease:<byte length of app>:<app><unit>`), so no two names can collide, whatever
//! characters a policy allows.

/// The keys and the release channel of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `leadership:{n<ns>}:`, the prefix of every key below (scripts name keys from it).
    pub(crate) prefix: String,
    /// Prefix of lease keys: `lease:<byte length of app>:<app><unit>` holds the term's fence
    /// while `unit` leads `app`, with the lease's expiry as its TTL (none while pinned).
    pub(crate) lease_prefix: String,
    /// Hash: application → the unit that last won a term (a pointer to its lease key; the
    /// key's existence, not this field, says whether the lease is held).
    pub(crate) owners: String,
    /// Set of applications that have at least one pin.
    pub(crate) pinned: String,
    /// Hash: application → claimed expiry (server ms) of a pinned lease, restored when the
    /// last pin goes (P3).
    pub(crate) pinexp: String,
    /// Prefix of the per-application set of pinning entities; the application name follows.
    pub(crate) pins_prefix: String,
    /// Pub/sub channel: `R<application>` on release, `C<application>` when waiters should
    /// look again (an unpin restarted expiry).
    pub(crate) channel: String,
}

impl Keys {
    pub(crate) fn new(namespace: &str) -> Self {
        let prefix = format!("leadership:{{n{}}}:", encode_tag(namespace));
        Keys {
            prefix: prefix.clone(),
            lease_prefix: format!("{prefix}lease:"),
            owners: format!("{prefix}owners"),
            pinned: format!("{prefix}pinned"),
            pinexp: format!("{prefix}pinexp"),
            pins_prefix: format!("{prefix}pins:"),
            channel: format!("{prefix}released"),
        }
    }

    /// The prefix of every lease key of `application`; the unit follows. The length prefix
    /// makes `(application, unit)` → key injective.
    pub(crate) fn lease_of(&self, application: &str) -> String {
        format!("{}{}:{application}", self.lease_prefix, application.len())
    }

    /// The lease key of `unit` leading `application`.
    pub(crate) fn lease(&self, application: &str, unit: &str) -> String {
        // One allocation.
        let mut key =
            String::with_capacity(self.lease_prefix.len() + 21 + application.len() + unit.len());
        self.push_lease(&mut key, application, unit);
        key
    }

    /// Runs `f` on the lease key of `unit` leading `application`, built in a reused
    /// per-thread buffer: the renewal fast path looks up and sends the key without
    /// allocating it.
    pub(crate) fn with_lease<R>(
        &self,
        application: &str,
        unit: &str,
        f: impl FnOnce(&str) -> R,
    ) -> R {
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with(|cell| match cell.try_borrow_mut() {
            Ok(mut key) => {
                key.clear();
                self.push_lease(&mut key, application, unit);
                let result = f(&key);
                if key.capacity() > 4096 {
                    // Long names once: do not keep their buffer for ever.
                    *key = String::new();
                }
                result
            }
            // Only if `f` itself builds a key this way.
            Err(_) => f(&self.lease(application, unit)),
        })
    }

    fn push_lease(&self, key: &mut String, application: &str, unit: &str) {
        use std::fmt::Write as _;
        key.push_str(&self.lease_prefix);
        let _ = write!(key, "{}:", application.len());
        key.push_str(application);
        key.push_str(unit);
    }

    /// The set of entities pinning `application`.
    pub(crate) fn pins(&self, application: &str) -> String {
        let mut key = String::with_capacity(self.pins_prefix.len() + application.len());
        key.push_str(&self.pins_prefix);
        key.push_str(application);
        key
    }
}

/// Injective, and the result contains no `{` or `}`.
fn encode_tag(namespace: &str) -> String {
    let mut out = String::with_capacity(namespace.len());
    for c in namespace.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis's hash tag: the part between the first `{` and the next `}`, if non-empty.
    fn hash_tag(key: &str) -> &str {
        let Some(open) = key.find('{') else {
            return key;
        };
        match key[open + 1..].find('}') {
            Some(0) | None => key,
            Some(len) => &key[open + 1..open + 1 + len],
        }
    }

    #[test]
    fn the_reused_buffer_builds_the_same_lease_keys() {
        let keys = Keys::new("ns");
        let long = "x".repeat(10_000);
        for (app, unit) in [
            ("app", "app/0"),
            ("a", "b"),
            (long.as_str(), "u"),
            ("app", "app/1"),
        ] {
            let built = keys.with_lease(app, unit, str::to_owned);
            assert_eq!(built, keys.lease(app, unit));
        }
        // Nested use falls back to a fresh key instead of panicking.
        let nested = keys.with_lease("a", "a/0", |outer| {
            keys.with_lease("b", "b/0", |inner| (outer.to_owned(), inner.to_owned()))
        });
        assert_eq!(nested, (keys.lease("a", "a/0"), keys.lease("b", "b/0")));
    }

    #[test]
    fn all_keys_of_a_namespace_share_one_hash_tag() {
        for ns in ["default", "", "a}b", "{x}", "%7D", "model:uuid"] {
            let keys = Keys::new(ns);
            let tag = hash_tag(&keys.owners);
            assert!(!tag.is_empty());
            for key in [
                &keys.pinned,
                &keys.pinexp,
                &keys.pins("a}{b"),
                &keys.lease("a}{b", "u}"),
                &keys.channel,
            ] {
                assert_eq!(hash_tag(key), tag, "{ns:?}: {key}");
            }
        }
    }

    #[test]
    fn namespaces_never_collide() {
        let names = [
            "a", "a}", "a%7D", "a%257D", "", "%", "{", "}", "a:b", "a:b:",
        ];
        let mut seen = std::collections::HashSet::new();
        for ns in names {
            assert!(seen.insert(Keys::new(ns).owners), "{ns:?} collides");
            assert!(seen.insert(hash_tag(&Keys::new(ns).owners).to_owned()));
        }
    }

    #[test]
    fn pin_keys_are_injective_in_the_application() {
        let keys = Keys::new("ns");
        let apps = ["a", "a:b", "a:", ":b", "leases", "}", "{ns}"];
        let set: std::collections::HashSet<_> = apps.iter().map(|a| keys.pins(a)).collect();
        assert_eq!(set.len(), apps.len());
        for app in apps {
            for fixed in [&keys.owners, &keys.pinned, &keys.pinexp] {
                assert_ne!(&keys.pins(app), fixed);
                assert_ne!(&keys.lease(app, "u"), fixed);
            }
        }
    }

    #[test]
    fn lease_keys_are_injective_in_application_and_unit() {
        let keys = Keys::new("ns");
        let pairs = [
            ("a:b", "c"),
            ("a", "b:c"),
            ("a", ":bc"),
            ("a:", "bc"),
            ("1:a", "b"),
            ("a", "1:ab"),
        ];
        let set: std::collections::HashSet<_> =
            pairs.iter().map(|(a, u)| keys.lease(a, u)).collect();
        assert_eq!(set.len(), pairs.len());
        for (app, unit) in pairs {
            assert!(keys.lease(app, unit).starts_with(&keys.lease_of(app)));
            assert!(!keys.lease(app, unit).starts_with(&keys.pins_prefix));
        }
    }
}
