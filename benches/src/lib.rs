//! Benchmarks live in `benches/`; this library holds their shared helpers.
#![forbid(unsafe_code)]

use std::time::Duration;

/// The median and the 99th percentile of a set of samples.
pub fn median_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    samples.sort_unstable();
    let p99 = ((samples.len() * 99).div_ceil(100)).saturating_sub(1);
    (samples[samples.len() / 2], samples[p99])
}

use std::path::Path;

use bytes::Bytes;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use wire::inference::ModelInferRequest;
use wire::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use wire::inference::model_infer_request::InferInputTensor;

/// One model's request, batch 1.
pub struct Case {
    /// Model name on the appliance.
    pub model: &'static str,
    /// Its input's name.
    pub input: &'static str,
    /// Its datatype.
    pub datatype: &'static str,
    /// Its shape.
    pub shape: Vec<i64>,
    /// Raw input bytes.
    pub data: Vec<u8>,
}

/// The reference models' requests: one held-out digit for `digits`, one
/// sentence for `minilm`.
#[allow(clippy::unwrap_used)] // a harness: fail loudly
pub fn cases() -> Vec<Case> {
    let x = std::fs::read(test_support::models_dir().join("digits_test_x.f32")).unwrap();
    let sentence = b"The weather is lovely today.";
    let mut text = (sentence.len() as u32).to_le_bytes().to_vec();
    text.extend_from_slice(sentence);
    vec![
        Case {
            model: "digits",
            input: "input",
            datatype: "FP32",
            shape: vec![1, 1, 8, 8],
            data: x[..256].to_vec(),
        },
        Case {
            model: "minilm",
            input: "text",
            datatype: "BYTES",
            shape: vec![1],
            data: text,
        },
    ]
}

/// A client of the appliance at `address` over mutual TLS with the bundle
/// in `certs` (ca.pem, cert.pem, key.pem).
#[allow(clippy::unwrap_used)] // a harness: fail loudly
pub async fn connect(address: &str, certs: &Path) -> GrpcInferenceServiceClient<Channel> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(read("cert.pem"), read("key.pem")))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    GrpcInferenceServiceClient::new(channel)
}

/// The ModelInfer request of `case`.
pub fn request(case: &Case) -> ModelInferRequest {
    ModelInferRequest {
        model_name: case.model.into(),
        inputs: vec![InferInputTensor {
            name: case.input.into(),
            datatype: case.datatype.into(),
            shape: case.shape.clone(),
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(case.data.clone())],
        ..Default::default()
    }
}
