"""Deployments of a release: Kubernetes and KServe objects built as data and validated against their schemas."""
