"""The node's image store: content-addressed blobs, unpacked layers, pulls, imports and
the embedded registry — what the container runtime builds root filesystems from."""
