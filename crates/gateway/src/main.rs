//! whatsip gateway binary.
fn main() {}
