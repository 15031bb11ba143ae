//! Side-by-side benchmarks of leadership stores against raw-store baselines.

fn main() {
    eprintln!("leadership: not built yet");
    std::process::exit(2);
}
