//! The whole conformance suite against the memory store, one test per rule, each on a fresh
//! store (the factory is evaluated per test) and through `Arc<dyn Leadership>`.

leadership_core::conformance_tests!(leadership_memory::MemoryFactory::new());

/// The suite again over one store shared by every case, in namespaces of their own, as the
/// facade's `memory://NAME` shares it.
mod shared_store {
    leadership_core::conformance_tests!(leadership_memory::MemoryFactory::with_store(
        leadership_memory::MemoryStore::named("conformance-shared")
    ));
}
