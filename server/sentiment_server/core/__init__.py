"""The pipeline's three steps, with no gRPC and no Triton in them: tokenize, batch, post-process."""
