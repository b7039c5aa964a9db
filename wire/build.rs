//! Compiles the .proto files with protox (pure Rust, so no `protoc` is
//! needed on the build machine) and generates tonic clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/inference.proto", "proto/admin.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Raw tensor bytes stay `bytes::Bytes`: no copy out of the frame.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(descriptors)?;
    Ok(())
}
