//! Client code for the CRI subset in proto/api.proto (protoc: Debian's protobuf-compiler).

fn main() {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["proto/api.proto"], &["proto"])
        .expect("compile proto/api.proto (protoc is needed: install protobuf-compiler)");
}
