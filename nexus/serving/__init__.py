"""The data plane: published Triton model repositories, the servers that run them, and their clients."""
