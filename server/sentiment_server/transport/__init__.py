"""The gRPC request path: proto in, the core pipeline called, proto out."""
