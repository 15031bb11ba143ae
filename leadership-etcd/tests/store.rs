//! The etcd store's own behaviour, beyond the shared conformance suite.

mod common;

use std::time::Duration;

use leadership_core::{CancellationToken, Checker, Claimer, Error, Pinner, Reader, Revoker};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_renew_check_revoke() {
    let store = common::store("basic").await;
    let fence = store.claim_leadership("app", "app/0", SECOND * 5).await.unwrap();
    // Renewal by the holder keeps the fence (C2).
    for _ in 0..3 {
        assert_eq!(store.claim_leadership("app", "app/0", SECOND * 5).await.unwrap(), fence);
    }
    assert!(matches!(
        store.claim_leadership("app", "app/1", SECOND).await,
        Err(Error::ClaimDenied)
    ));
    assert_eq!(store.leadership_check("app", "app/0").check().await.unwrap(), fence);
    assert!(store.leadership_check("app", "app/1").check().await.unwrap_err().is_not_leader());
    assert!(matches!(
        store.revoke_leadership("app", "app/1").await,
        Err(Error::ClaimNotHeld)
    ));
    store.revoke_leadership("app", "app/0").await.unwrap();
    store.revoke_leadership("app", "app/0").await.unwrap();
    let next = store.claim_leadership("app", "app/1", SECOND).await.unwrap();
    assert!(next > fence, "{next} > {fence}");
}
