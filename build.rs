//! Compiles `proto/sigver.proto` with protox (pure Rust) and prost-build, so that building needs
//! no system `protoc`.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto/sigver.proto");
    let descriptors = protox::compile(["sigver.proto"], ["proto"])?;
    prost_build::Config::new()
        // `bytes::Bytes` for `data`: decoding from a received frame slices it instead of copying.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
