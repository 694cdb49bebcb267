"""Kubernetes side of the platform: KubeRay CRD validation (and, next, the RayJob runner)."""
