"""Prints the Open Inference Protocol as the stock tritonclient package compiled it: every
message (nested ones too) with its fields' numbers, types and labels, and every RPC of
inference.GRPCInferenceService with its request and response types, as one JSON object.
The protocol test compares the appliance's own .proto against it."""

import json

from tritonclient.grpc import service_pb2


def fields(message, out):
    out[message.full_name] = {
        f.name: [f.number, f.type, "repeated" if f.is_repeated else "optional",
                 f.message_type.full_name if f.message_type else ""]
        for f in message.fields
    }
    for nested in message.nested_types:
        fields(nested, out)


def main():
    messages = {}
    for message in service_pb2.DESCRIPTOR.message_types_by_name.values():
        fields(message, messages)
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    rpcs = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods}
    print(json.dumps({"messages": messages, "rpcs": rpcs}))


if __name__ == "__main__":
    main()
