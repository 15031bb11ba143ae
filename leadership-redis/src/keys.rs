//! Key layout of one namespace (V5, N1).
//!
//! Every key of a namespace starts with `leadership:{n<ns>}:`, so all of them share one hash
//! tag (one cluster slot, so scripts may touch them together). The namespace is
//! percent-encoded (`%`, `{`, `}`) so it cannot end the tag early, and the leading `n` keeps
//! the tag non-empty. Application names are never concatenated with another variable part:
//! they are hash fields or set members (binary-safe), or the one suffix after a fixed prefix
//! (the pin set), so no two names can collide, whatever characters a policy allows.

/// The keys and the release channel of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// Hash: application → `"<expiry µs>:<fence>:<holder>"`.
    pub(crate) leases: String,
    /// Hash: application → last fence issued. Never deleted (F1).
    pub(crate) fences: String,
    /// Set of applications that have at least one pin.
    pub(crate) pinned: String,
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
            leases: format!("{prefix}leases"),
            fences: format!("{prefix}fences"),
            pinned: format!("{prefix}pinned"),
            pins_prefix: format!("{prefix}pins:"),
            channel: format!("{prefix}released"),
        }
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
    fn all_keys_of_a_namespace_share_one_hash_tag() {
        for ns in ["default", "", "a}b", "{x}", "%7D", "model:uuid"] {
            let keys = Keys::new(ns);
            let tag = hash_tag(&keys.leases);
            assert!(!tag.is_empty());
            for key in [
                &keys.fences,
                &keys.pinned,
                &keys.pins("a}{b"),
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
            assert!(seen.insert(Keys::new(ns).leases), "{ns:?} collides");
            assert!(seen.insert(hash_tag(&Keys::new(ns).leases).to_owned()));
        }
    }

    #[test]
    fn pin_keys_are_injective_in_the_application() {
        let keys = Keys::new("ns");
        let apps = ["a", "a:b", "a:", ":b", "leases", "}", "{ns}"];
        let set: std::collections::HashSet<_> = apps.iter().map(|a| keys.pins(a)).collect();
        assert_eq!(set.len(), apps.len());
        for app in apps {
            assert_ne!(keys.pins(app), keys.leases);
            assert_ne!(keys.pins(app), keys.fences);
            assert_ne!(keys.pins(app), keys.pinned);
        }
    }
}
