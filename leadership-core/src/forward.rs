//! Forwarding impls: `Arc<T>` and `Box<T>` are whatever `T` is (including `T = dyn
//! Leadership`), so generic code bounded by a trait takes an `Arc<dyn Leadership>` as it is.
//!
//! ```
//! use std::sync::Arc;
//! use leadership_core::{Leadership, Reader};
//!
//! async fn count<R: Reader>(reader: &R) -> usize {
//!     reader.leaders().await.map_or(0, |leaders| leaders.len())
//! }
//!
//! # fn check(store: Arc<dyn Leadership>, boxed: Box<dyn Leadership>) {
//! let _ = count(&store); // Arc<dyn Leadership>: Reader
//! let _ = count(&boxed); // Box<dyn Leadership>: Reader
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::watch::{LeaderStream, Watcher};
use crate::{Checker, Claimer, Fence, Pinner, Reader, Result, Revoker, Token};

macro_rules! forward {
    ($($wrapper:ident),*) => {$(
        #[async_trait]
        impl<T: Claimer + ?Sized> Claimer for $wrapper<T> {
            async fn claim_leadership(
                &self,
                application: &str,
                unit: &str,
                duration: Duration,
            ) -> Result<Fence> {
                (**self).claim_leadership(application, unit, duration).await
            }

            async fn block_until_leadership_released(
                &self,
                application: &str,
                cancel: CancellationToken,
            ) -> Result<()> {
                (**self).block_until_leadership_released(application, cancel).await
            }
        }

        impl<T: Checker + ?Sized> Checker for $wrapper<T> {
            fn leadership_check(&self, application: &str, unit: &str) -> Box<dyn Token> {
                (**self).leadership_check(application, unit)
            }
        }

        #[async_trait]
        impl<T: Token + ?Sized> Token for $wrapper<T> {
            async fn check(&self) -> Result<Fence> {
                (**self).check().await
            }
        }

        #[async_trait]
        impl<T: Revoker + ?Sized> Revoker for $wrapper<T> {
            async fn revoke_leadership(&self, application: &str, unit: &str) -> Result<()> {
                (**self).revoke_leadership(application, unit).await
            }
        }

        #[async_trait]
        impl<T: Pinner + ?Sized> Pinner for $wrapper<T> {
            async fn pin_leadership(&self, application: &str, entity: &str) -> Result<()> {
                (**self).pin_leadership(application, entity).await
            }

            async fn unpin_leadership(&self, application: &str, entity: &str) -> Result<()> {
                (**self).unpin_leadership(application, entity).await
            }

            async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>> {
                (**self).pinned_leadership().await
            }
        }

        #[async_trait]
        impl<T: Reader + ?Sized> Reader for $wrapper<T> {
            async fn leaders(&self) -> Result<BTreeMap<String, String>> {
                (**self).leaders().await
            }
        }

        #[async_trait]
        impl<T: Watcher + ?Sized> Watcher for $wrapper<T> {
            async fn watch_leaders(&self) -> Result<LeaderStream> {
                (**self).watch_leaders().await
            }

            async fn watch_leader(&self, application: &str) -> Result<LeaderStream> {
                (**self).watch_leader(application).await
            }
        }
    )*};
}

forward!(Arc, Box);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Leadership;

    fn is_leadership<L: Leadership + ?Sized>() {}

    #[test]
    fn smart_pointers_to_stores_are_stores() {
        is_leadership::<Arc<dyn Leadership>>();
        is_leadership::<Box<dyn Leadership>>();
        is_leadership::<Arc<Box<dyn Leadership>>>();
    }
}
