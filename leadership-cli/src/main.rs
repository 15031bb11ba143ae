//! The leadership command: operator commands and the demo.

fn main() {
    eprintln!("leadership: not built yet");
    std::process::exit(2);
}
