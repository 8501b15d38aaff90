//! whatsip-sim binary.
fn main() {}
