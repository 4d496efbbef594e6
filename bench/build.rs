// Same rpath embedding as the actors crate: see actors/build.rs.
include!("../actors/build.rs");
