//! Hostile input against the memory store (V1–V5, N1); see `hostile_cases`.

mod hostile_cases;

use std::sync::Arc;

use leadership_core::conformance::StoreFactory;
use leadership_memory::MemoryFactory;

fn factory() -> Arc<dyn StoreFactory> {
    Arc::new(MemoryFactory::new())
}

#[test]
fn rejected_input_changes_nothing() {
    hostile_cases::rejected_input_changes_nothing(factory, 512);
}

#[test]
fn permissive_names_round_trip() {
    hostile_cases::permissive_names_round_trip(factory, 256);
}

#[test]
fn namespaces_never_collide() {
    hostile_cases::namespaces_never_collide(factory, 128);
}

#[test]
fn largest_names() {
    hostile_cases::largest_names(factory);
}

#[test]
fn duration_edges() {
    hostile_cases::duration_edges(factory);
}

#[test]
fn huge_durations() {
    hostile_cases::huge_durations(factory, 128);
}
