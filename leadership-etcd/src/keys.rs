//! The key layout, with names encoded injectively (V5, N1).
//!
//! Every name (namespace, application, entity) is percent-encoded: bytes outside
//! `[A-Za-z0-9._~-]` become `%XX`. Encoded names never contain `/`, and `%` itself is encoded,
//! so the encoding is injective and a name can never reach outside its segment: `a/b` + `c`
//! and `a` + `b/c` stay apart, and no namespace is a prefix of another namespace's keys.
//!
//! ```text
//! {prefix}/{ns}/l/{app}            the leader key: value = holder unit; create revision = fence
//! {prefix}/{ns}/c/{app}            the term clock while pinned: on the term's lease
//! {prefix}/{ns}/p/{app}/{entity}   one pin
//! ```

/// Key names for one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    root: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, namespace: &str) -> Self {
        Keys {
            root: format!("{}/{}/", encode(prefix), encode(namespace)),
        }
    }

    pub(crate) fn leader(&self, application: &str) -> String {
        format!("{}l/{}", self.root, encode(application))
    }

    pub(crate) fn leaders(&self) -> String {
        format!("{}l/", self.root)
    }

    pub(crate) fn clock(&self, application: &str) -> String {
        format!("{}c/{}", self.root, encode(application))
    }

    pub(crate) fn pin(&self, application: &str, entity: &str) -> String {
        format!("{}p/{}/{}", self.root, encode(application), encode(entity))
    }

    /// The prefix of every pin of `application`.
    pub(crate) fn pins_of(&self, application: &str) -> String {
        format!("{}p/{}/", self.root, encode(application))
    }

    /// The prefix of every pin in the namespace.
    pub(crate) fn pins(&self) -> String {
        format!("{}p/", self.root)
    }

    /// The application of a leader key.
    pub(crate) fn application_of_leader(&self, key: &[u8]) -> Option<String> {
        let rest = key.strip_prefix(self.leaders().as_bytes())?;
        decode(rest)
    }

    /// The application and entity of a pin key.
    pub(crate) fn parse_pin(&self, key: &[u8]) -> Option<(String, String)> {
        let rest = key.strip_prefix(self.pins().as_bytes())?;
        let slash = rest.iter().position(|&b| b == b'/')?;
        Some((decode(&rest[..slash])?, decode(&rest[slash + 1..])?))
    }
}

fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'~' | b'-')
}

pub(crate) fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &byte in name.as_bytes() {
        if is_plain(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push_str(&format!("{byte:02X}"));
        }
    }
    out
}

fn decode(encoded: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        if encoded[i] == b'%' {
            let hex = std::str::from_utf8(encoded.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(encoded[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_injective_and_slash_free() {
        let names = [
            "a:b", "a", "b:c", "a/b", "a%2Fb", "a b", "é", "{x}", "*", "",
        ];
        let encoded: Vec<String> = names.iter().map(|n| encode(n)).collect();
        for (i, a) in encoded.iter().enumerate() {
            assert!(!a.contains('/'), "{a}");
            assert_eq!(decode(a.as_bytes()).as_deref(), Some(names[i]));
            for b in &encoded[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn pins_of_different_applications_never_overlap() {
        let keys = Keys::new("leadership", "ns");
        // "a" + "b/c" versus "a/b" + "c".
        let one = keys.pin("a", "b/c");
        let two = keys.pin("a/b", "c");
        assert_ne!(one, two);
        assert!(one.starts_with(&keys.pins_of("a")));
        assert!(!two.starts_with(&keys.pins_of("a")));
        assert_eq!(
            keys.parse_pin(two.as_bytes()),
            Some(("a/b".to_owned(), "c".to_owned()))
        );
        assert_eq!(
            keys.application_of_leader(keys.leader("x/y:z").as_bytes()),
            Some("x/y:z".to_owned())
        );
    }

    #[test]
    fn namespaces_never_nest() {
        let a = Keys::new("leadership", "m");
        let b = Keys::new("leadership", "m/l");
        assert!(!b.leader("x").starts_with(&a.leaders()));
        assert!(!a.leader("x").starts_with(&b.leaders()));
    }
}
