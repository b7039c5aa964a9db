"""Prints the Open Inference Protocol as the stock tritonclient package compiled it: every
message (nested ones too, and those of model_config.proto it imports) with its fields'
numbers, types, labels and message or enum type, the file it comes from, every enum's
values, and every RPC of inference.GRPCInferenceService with its request and response
types, as one JSON object. The protocol test compares the appliance's own .proto against it."""

import json

from tritonclient.grpc import service_pb2


def type_name(f):
    if f.message_type:
        return f.message_type.full_name
    if f.enum_type:
        return f.enum_type.full_name
    return ""


def fields(message, out, files, enums):
    out[message.full_name] = {
        f.name: [f.number, f.type, "repeated" if f.is_repeated else "optional", type_name(f)]
        for f in message.fields
    }
    files[message.full_name] = message.file.name
    for enum in message.enum_types:
        enums[enum.full_name] = {v.name: v.number for v in enum.values}
    for nested in message.nested_types:
        fields(nested, out, files, enums)


def main():
    messages, files, enums = {}, {}, {}
    for file in [service_pb2.DESCRIPTOR, *service_pb2.DESCRIPTOR.dependencies]:
        for message in file.message_types_by_name.values():
            fields(message, messages, files, enums)
        for enum in file.enum_types_by_name.values():
            enums[enum.full_name] = {v.name: v.number for v in enum.values}
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    rpcs = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods}
    print(json.dumps({"messages": messages, "files": files, "enums": enums, "rpcs": rpcs}))


if __name__ == "__main__":
    main()
