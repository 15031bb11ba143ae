//! Issue 19.4, S2: one URL grammar on every store, table-driven, through each store's own
//! parser (the facade only dispatches on the scheme, S1). Nothing here needs a server: the
//! builders parse at once.
#![cfg(all(feature = "memory", feature = "redis", feature = "etcd"))]

use std::time::Duration;

use leadership::Error;
use leadership::etcd::EtcdStore;
use leadership::memory::MemoryStore;
use leadership::redis::RedisStore;

/// (namespace, timeout) as each store's builder parsed `url`.
fn parse(url: &str) -> Result<(String, Duration), Error> {
    let scheme = url.split("://").next().unwrap_or_default();
    match scheme {
        "memory" => MemoryStore::builder(url).map(|b| (b.namespace_name().to_owned(), b.timeout())),
        "redis" | "rediss" | "redis+cluster" | "redis+sentinel" => {
            RedisStore::builder(url).map(|b| (b.namespace_name().to_owned(), b.timeout()))
        }
        "etcd" | "etcds" => {
            EtcdStore::builder(url).map(|b| (b.namespace_name().to_owned(), b.timeout()))
        }
        other => panic!("no store for {other}"),
    }
}

/// Every store's base URL, with and without credentials.
const BASES: [&str; 7] = [
    "memory://",
    "memory://shared",
    "redis://u:hunter2@127.0.0.1:6379",
    "rediss://127.0.0.1:6380/2",
    "redis+cluster://u:hunter2@127.0.0.1:7000,127.0.0.1:7001",
    "redis+sentinel://u:hunter2@127.0.0.1:26379,127.0.0.1:26380/leaders",
    "etcd://u:hunter2@127.0.0.1:2379,127.0.0.1:2380",
];

fn with(base: &str, query: &str) -> String {
    format!("{base}?{query}")
}

#[test]
fn namespaces_decode_the_same_way_everywhere() {
    for base in BASES {
        for (query, namespace) in [
            ("namespace=a%2Fb", "a/b"),
            ("namespace=a/b", "a/b"),
            ("namespace=model%20one", "model one"),
            ("namespace=%E2%9C%93", "✓"),
        ] {
            let url = with(base, query);
            let (parsed, _) = parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(parsed, namespace, "{url}");
        }
        let (parsed, timeout) = parse(base).unwrap_or_else(|e| panic!("{base}: {e}"));
        assert_eq!(parsed, leadership::DEFAULT_NAMESPACE, "{base}");
        assert_eq!(timeout, leadership::DEFAULT_TIMEOUT, "{base}");
    }
}

#[test]
fn timeouts_take_every_humane_form_everywhere() {
    for base in BASES {
        for (value, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            ("1m", Duration::from_secs(60)),
            ("1m%2030s", Duration::from_secs(90)),
        ] {
            let url = with(base, &format!("timeout={value}"));
            let (_, timeout) = parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(timeout, expected, "{url}");
        }
        for bad in ["0s", "soon", "-1s", "5"] {
            let url = with(base, &format!("timeout={bad}"));
            let err = parse(&url).expect_err(&url);
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
            assert!(err.to_string().contains("timeout"), "{url}: {err}");
        }
    }
}

#[test]
fn an_unknown_parameter_is_an_error_naming_it_everywhere() {
    for base in BASES {
        for query in ["nmespace=x", "namespace=x&tiemout=1s", "protocol=resp3"] {
            let url = with(base, query);
            let err = parse(&url).expect_err(&url);
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
            let name = query.rsplit('&').next().and_then(|p| p.split('=').next());
            let name = name.unwrap_or_default();
            assert!(
                err.to_string()
                    .contains(&format!("unknown URL parameter \"{name}\"")),
                "{url}: {err}"
            );
        }
    }
}

#[test]
fn credentials_are_never_printed() {
    for base in BASES.iter().filter(|b| b.contains("hunter2")) {
        for query in ["timeout=soon", "bogus=1", "namespace=%zz", "namespace="] {
            let url = with(base, query);
            let err = parse(&url).expect_err(&url);
            for text in [err.to_string(), format!("{err:?}"), err.one_line()] {
                assert!(!text.contains("hunter2"), "{url}: {text}");
            }
        }
        let builder = format!(
            "{:?}",
            RedisStore::builder(
                &base
                    .replace("etcd://", "redis://")
                    .replace(",127.0.0.1:2380", "")
            )
        );
        assert!(!builder.contains("hunter2"), "{builder}");
        let builder = format!(
            "{:?}",
            EtcdStore::builder(&base.replace("redis://", "etcd://"))
        );
        assert!(!builder.contains("hunter2"), "{builder}");
    }
}

#[tokio::test]
async fn the_facade_only_dispatches() {
    // The same grammar through connect(): a bad parameter fails before any I/O.
    for base in BASES {
        let url = with(base, "bogus=1");
        let err = leadership::connect(&url).await.err().expect(&url);
        assert!(
            err.to_string().contains("unknown URL parameter \"bogus\""),
            "{err}"
        );
    }
    let err = leadership::connect("ftp://x").await.err().expect("ftp");
    assert!(err.to_string().contains("unknown scheme \"ftp\""), "{err}");
}

/// Issue 18: the scale-out URLs reach the Redis store, and a malformed one says what the
/// right form is, before any I/O.
#[tokio::test]
async fn scale_out_urls_reach_the_redis_store_and_bad_ones_say_the_right_form() {
    for (url, says) in [
        ("redis+sentinel://127.0.0.1:26379", "/MASTER"),
        ("redis+cluster://127.0.0.1:7000/3", "has no databases"),
        (
            "redis://127.0.0.1:7000,127.0.0.1:7001",
            "redis+cluster://h:p,h:p",
        ),
        ("redis+cluster://:pw@?namespace=x", "no host"),
        (
            "REDIS+CLUSTER://127.0.0.1:7000?bogus=1",
            "unknown URL parameter \"bogus\"",
        ),
    ] {
        let err = leadership::connect(url).await.err().expect(url);
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
        assert!(err.to_string().contains(says), "{url}: {err}");
    }
}
