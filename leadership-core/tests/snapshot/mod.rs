//! One drained snapshot of `metrics-util`'s debugging recorder, shared by the M1 tests.
//! Taking it drains the recorder (counters and gauges are swapped to zero, histogram samples
//! taken), so each read is what happened since the previous snapshot.

use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, Snapshotter};

pub struct Snap(Vec<(CompositeKey, DebugValue)>);

impl Snap {
    pub fn take(snapshotter: &Snapshotter) -> Snap {
        Snap(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| (key, value))
                .collect(),
        )
    }

    /// The value of metric `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        self.0
            .iter()
            .find(|(key, _)| {
                let key = key.key();
                let mut have: Vec<(&str, &str)> =
                    key.labels().map(|l| (l.key(), l.value())).collect();
                let mut want = labels.to_vec();
                have.sort_unstable();
                want.sort_unstable();
                key.name() == name && have == want
            })
            .map(|(_, value)| value)
    }
}
