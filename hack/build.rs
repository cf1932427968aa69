// A build script makes cargo treat this crate's build-dependencies as
// such, so hakari can unify their features too.
fn main() {}
