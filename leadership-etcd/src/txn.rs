//! Reading etcd transaction responses.

use etcd_client::{KeyValue, TxnOpResponse, TxnResponse};
use leadership_core::{Error, Fence, Result};

use crate::BACKEND;

/// What the claim transaction found when the application was already held.
pub(crate) struct Found {
    pub(crate) lead: KeyValue,
    pub(crate) clock: Option<KeyValue>,
}

pub(crate) fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, etcd_client::ResponseHeader::revision)
}

pub(crate) fn fence_of(revision: i64) -> Result<Fence> {
    u64::try_from(revision)
        .ok()
        .filter(|&r| r > 0)
        .map(Fence)
        .ok_or_else(|| Error::backend(BACKEND, "claim", "etcd returned no revision"))
}

pub(crate) fn gets_of(response: &TxnResponse) -> Vec<etcd_client::GetResponse> {
    response
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        })
        .collect()
}

/// The leader and clock keys from a transaction whose branch read them, in that order.
pub(crate) fn found_in(response: &TxnResponse) -> Option<Found> {
    let gets = gets_of(response);
    let lead = gets.first()?.kvs().first()?.clone();
    let clock = gets.get(1).and_then(|g| g.kvs().first()).cloned();
    Some(Found { lead, clock })
}
