//! The wire protocol is the published one: every message, field number, type
//! and label of our `inference.proto`, every enum value, and every RPC,
//! equal to what the stock `tritonclient` package compiled. Messages from
//! Triton's `model_config.proto` are a subset: each field we define is
//! theirs exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde_json::{Value, json};

fn enum_values(e: &prost_types::EnumDescriptorProto) -> Value {
    Value::Object(
        e.value
            .iter()
            .map(|v| (v.name().to_owned(), json!(v.number())))
            .collect(),
    )
}

fn collect(
    prefix: &str,
    message: &DescriptorProto,
    out: &mut BTreeMap<String, Value>,
    enums: &mut BTreeMap<String, Value>,
) {
    let name = format!("{prefix}.{}", message.name());
    let mut fields = serde_json::Map::new();
    for f in &message.field {
        let repeated = f.label() == prost_types::field_descriptor_proto::Label::Repeated;
        fields.insert(
            f.name().to_owned(),
            json!([
                f.number(),
                f.r#type() as i32,
                if repeated { "repeated" } else { "optional" },
                f.type_name().trim_start_matches('.'),
            ]),
        );
    }
    out.insert(name.clone(), Value::Object(fields));
    for e in &message.enum_type {
        enums.insert(format!("{name}.{}", e.name()), enum_values(e));
    }
    for nested in &message.nested_type {
        collect(&name, nested, out, enums);
    }
}

#[test]
fn our_protocol_matches_the_one_tritonclient_ships() {
    let out = Command::new(test_support::venv_python())
        .arg(test_support::workspace_root().join("tests/python/describe_protocol.py"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();

    let set = FileDescriptorSet::decode(wire::DESCRIPTORS).unwrap();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "inference")
        .unwrap();
    let mut ours = BTreeMap::new();
    let mut enums = BTreeMap::new();
    for message in &file.message_type {
        collect("inference", message, &mut ours, &mut enums);
    }
    for e in &file.enum_type {
        enums.insert(format!("inference.{}", e.name()), enum_values(e));
    }
    assert!(ours.len() >= 30, "{:?}", ours.keys());
    for (name, fields) in &ours {
        if theirs["files"][name] == "model_config.proto" {
            // A subset of Triton's model configuration: what we define is
            // exactly theirs.
            for (field, spec) in fields.as_object().unwrap() {
                assert_eq!(
                    &theirs["messages"][name][field], spec,
                    "field {name}.{field} differs from tritonclient's"
                );
            }
        } else {
            // Map entries are synthesised the same way on both sides.
            assert_eq!(
                &theirs["messages"][name], fields,
                "message {name} differs from tritonclient's"
            );
        }
    }
    assert!(enums.contains_key("inference.DataType"), "{enums:?}");
    for (name, values) in &enums {
        assert_eq!(
            &theirs["enums"][name], values,
            "enum {name} differs from tritonclient's"
        );
    }
    let service = file
        .service
        .iter()
        .find(|s| s.name() == "GRPCInferenceService")
        .unwrap();
    for method in &service.method {
        assert_eq!(
            theirs["rpcs"][method.name()],
            json!([
                method.input_type().trim_start_matches('.'),
                method.output_type().trim_start_matches('.')
            ]),
            "rpc {}",
            method.name()
        );
    }
}
